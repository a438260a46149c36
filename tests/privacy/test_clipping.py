import torch

from mmpose_dp.privacy import (clip_and_sum, clip_factors, clipped_sum,
                               per_sample_norms)


def _grads(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 4, generator=g) * 5,
            torch.randn(batch, 7, generator=g)]


def test_norms_are_over_all_parameters():
    grads = _grads()
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
    assert torch.allclose(per_sample_norms(grads), flat.norm(dim=1))


def test_factors_are_min_one_c_over_norm():
    norms = torch.tensor([0.05, 0.1, 0.5, 10.0])
    f = clip_factors(norms, 0.1)
    expected = torch.minimum(torch.ones(4), 0.1 / (norms + 1e-6))
    assert torch.allclose(f, expected)
    assert f[0] == 1.0 and f[3] < 0.011


def test_every_clipped_contribution_has_norm_at_most_c():
    grads = _grads()
    c = 0.7
    factors = clip_factors(per_sample_norms(grads), c)
    clipped = [g * factors.view(-1, *[1] * (g.dim() - 1)) for g in grads]
    assert (per_sample_norms(clipped) <= c + 1e-5).all()


def test_clipped_sum_is_the_sum_of_clipped_samples():
    grads = _grads()
    c = 0.7
    summed = clip_and_sum(grads, c)
    by_hand = [torch.zeros_like(g[0]) for g in grads]
    for i in range(grads[0].shape[0]):
        sample = [g[i] for g in grads]
        norm = torch.sqrt(sum((s**2).sum() for s in sample))
        factor = min(1.0, c / (norm.item() + 1e-6))
        for acc, s in zip(by_hand, sample):
            acc += factor * s
    for a, b in zip(summed, by_hand):
        assert torch.allclose(a, b, atol=1e-6)


def test_huge_c_leaves_gradients_unclipped():
    grads = _grads()
    factors = clip_factors(per_sample_norms(grads), 1e9)
    assert torch.equal(factors, torch.ones_like(factors))
    for s, g in zip(clipped_sum(grads, factors), grads):
        assert torch.allclose(s, g.sum(0))
