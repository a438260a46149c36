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


def test_a_cpu_draw_in_pieces_is_white_keyed_and_thread_independent(
        monkeypatch):
    from mmpose_dp.privacy import noise
    monkeypatch.setattr(noise, 'CPU_PIECE', 10_000)
    cpu = torch.device('cpu')

    def draw(key, threads):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return noise.flat_normal(95_000, 0.5, make_generator(cpu, key),
                                     cpu, torch.float32)
        finally:
            torch.set_num_threads(before)

    a = draw(7, 1)
    assert torch.equal(a, draw(7, 2))  # the same noise on any machine
    assert not torch.equal(a, draw(8, 2))
    assert abs(a.std().item() / 0.5 - 1) < 0.02
    # The ten pieces come from different generators, not one repeated.
    pieces = a[:90_000].view(9, 10_000)
    corr = torch.corrcoef(pieces)
    assert (corr - torch.eye(9)).abs().max() < 0.05
    assert len({round(p[0].item(), 6) for p in pieces}) == 9
