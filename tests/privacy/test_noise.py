import torch

from mmpose_dp.privacy import add_gaussian_noise, make_generator


def test_noise_std_matches_and_is_zero_mean():
    t = [torch.zeros(200_000)]
    add_gaussian_noise(t, 0.3, make_generator(torch.device('cpu'), 0))
    # std of 2e5 normals: relative standard error 0.16%; allow 1%.
    assert abs(t[0].std().item() / 0.3 - 1) < 0.01
    assert abs(t[0].mean().item()) < 0.3 * 5 / 200_000**0.5


def test_noise_differs_between_draws_and_replays_with_a_seed():
    def draw(seed):
        g = make_generator(torch.device('cpu'), seed)
        a, b = [torch.zeros(100)], [torch.zeros(100)]
        add_gaussian_noise(a, 1.0, g)
        add_gaussian_noise(b, 1.0, g)
        return a[0], b[0]

    a1, b1 = draw(5)
    a2, b2 = draw(5)
    assert not torch.equal(a1, b1)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)


def test_unseeded_generators_differ():
    a, b = [torch.zeros(100)], [torch.zeros(100)]
    add_gaussian_noise(a, 1.0, make_generator(torch.device('cpu')))
    add_gaussian_noise(b, 1.0, make_generator(torch.device('cpu')))
    assert not torch.equal(a[0], b[0])
