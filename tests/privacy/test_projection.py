import pytest
import torch

from mmpose_dp.privacy import PublicSubspace, flatten, unflatten


def _public_grads(m=12, p=300, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, p, generator=g).to(dtype)


def test_basis_is_orthonormal_with_rank_k():
    G = _public_grads()
    sub = PublicSubspace(G, rank=5)
    V = sub.basis()
    assert V.shape == (300, 5) and sub.rank == 5
    assert torch.allclose(V.T @ V, torch.eye(5), atol=1e-4)


def test_full_rank_projection_reproduces_every_public_gradient():
    G = _public_grads()
    sub = PublicSubspace(G, rank=12)
    for row in G:
        assert torch.allclose(sub.project_flat(row), row, atol=1e-4)


def test_projection_equals_v_vt_and_is_idempotent():
    G = _public_grads()
    sub = PublicSubspace(G, rank=7)
    V = sub.basis()
    g = torch.randn(300)
    projected = sub.project_flat(g)
    assert torch.allclose(projected, V @ (V.T @ g), atol=1e-4)
    assert torch.allclose(sub.project_flat(projected), projected, atol=1e-4)
    # The residual is orthogonal to the subspace.
    assert (V.T @ (g - projected)).abs().max() < 1e-4


def test_top_k_keeps_the_largest_energy_directions():
    G = _public_grads()
    G[:, 0] *= 100  # one dominant direction
    sub = PublicSubspace(G, rank=1)
    assert sub.basis()[0, 0].abs() > 0.99
    assert sub.energy > 0.9


def test_rank_is_that_of_the_public_gradients():
    # 12 samples span 12 directions: rank 12, not the number of batches (the
    # paper's code built the basis from 4 mini-batch gradients: rank 4).
    G = _public_grads(m=12)
    assert PublicSubspace(G, rank=12).rank == 12
    batch_grads = G.view(4, 3, -1).mean(1)
    assert PublicSubspace(batch_grads, rank=4).rank == 4
    # Duplicated samples add no direction.
    assert PublicSubspace(torch.cat([G[:3], G[:3]]), rank=6).rank == 3


def test_half_precision_storage_stays_orthonormal():
    G = _public_grads(dtype=torch.bfloat16)
    sub = PublicSubspace(G, rank=12)
    V = sub.basis()
    assert torch.allclose(V.T @ V, torch.eye(12), atol=1e-3)
    for row in G.float():
        assert torch.allclose(sub.project_flat(row), row, atol=1e-2)


def test_rank_above_m_is_refused():
    with pytest.raises(ValueError, match='number of public samples'):
        PublicSubspace(_public_grads(m=4), rank=5)


def test_per_parameter_projection_round_trips_shapes():
    G = _public_grads(m=3, p=2 * 3 + 4)
    sub = PublicSubspace(G, rank=3)
    grads = [torch.randn(2, 3), torch.randn(4)]
    out = sub.project(grads)
    assert [t.shape for t in out] == [t.shape for t in grads]
    assert torch.allclose(flatten(out), sub.project_flat(flatten(grads)))
    assert all(torch.equal(a, b) for a, b in
               zip(unflatten(flatten(grads), grads), grads))
