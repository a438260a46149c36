"""Projection and public-feature stages on a tiny MMPose model."""
import copy

import pytest
import torch
from mmengine.dataset import pseudo_collate

from mmpose_dp.datasets import PoissonBatchSampler
from mmpose_dp.engine import DPOptimWrapper
from mmpose_dp.engine.public_stages import build_public_feature_loader
from mmpose_dp.engine.stages import (ProjectionStage, PublicFeatureStage,
                                     pose_loss, public_per_sample_gradients)
from mmpose_dp.privacy import (PrivacyLedger, disable_inplace_activations,
                               flatten)

from ..conftest import build_tiny_pose, tiny_config


@pytest.fixture
def setup(synthetic_mpii):
    model, dataset = build_tiny_pose('hrnet', synthetic_mpii)
    disable_inplace_activations(model)
    return model, dataset


def _wrapper(model, sigma=0.0, c=1e9, batch=4.0, ledger=None):
    ow = DPOptimWrapper(torch.optim.SGD(model.parameters(), lr=1.0),
                        max_grad_norm=c, noise_seed=0, engine='hooks')
    ow.setup(model, 'mean', sigma, 0.1, batch, ledger or PrivacyLedger(1e-5))
    return ow


def _private_step(model, ow, batch):
    ow.private_micro_batch(model, batch, list(range(len(batch['inputs']))))
    ow.private_step()


def _params(model):
    return flatten([p.detach() for p in model.parameters()]).clone()


def test_public_gradients_are_per_sample_and_leave_grads_alone(setup):
    model, dataset = setup
    params = [p for p in model.parameters() if p.requires_grad]
    samples = [dataset[i] for i in range(3)]
    G = public_per_sample_gradients(model, samples, params, torch.float32)
    assert G.shape == (3, sum(p.numel() for p in params))
    assert all(p.grad is None for p in params)
    assert model.training  # restored after the eval-mode pass
    model.eval()
    model.zero_grad()
    pose_loss(model, pseudo_collate([samples[1]])).backward()
    model.train()
    assert torch.allclose(G[1], flatten([p.grad for p in params]),
                          atol=1e-6)


def test_projected_update_lies_in_the_public_span(setup):
    model, dataset = setup
    public = [dataset[i] for i in range(40, 48)]
    stage = ProjectionStage(model, public, rank=8, interval=2)
    ow = _wrapper(model, sigma=1.0, c=0.1)
    ow.stages = [stage]
    batch = pseudo_collate([dataset[i] for i in range(4)])
    before = _params(model)
    _private_step(model, ow, batch)
    update = before - _params(model)
    V = stage.subspace.basis()
    assert stage.subspace.rank == 8
    assert torch.allclose(V @ (V.T @ update), update, atol=1e-5)
    assert update.norm() > 0


def test_projection_refreshes_every_interval(setup):
    model, dataset = setup
    stage = ProjectionStage(model, [dataset[i] for i in range(40, 44)],
                            rank=4, interval=2)
    ow = _wrapper(model, sigma=1.0, c=0.1)
    ow.stages = [stage]
    refreshed_at = []
    refresh = stage.refresh

    def counting_refresh(wrapper):
        refreshed_at.append(wrapper.ledger.steps + 1)
        refresh(wrapper)

    stage.refresh = counting_refresh
    subspaces = []
    for _ in range(5):
        ow.private_step()  # noise-only steps move the weights
        subspaces.append(stage.subspace)  # kept alive: no id() reuse
    assert refreshed_at == [1, 3, 5]
    assert subspaces[0] is subspaces[1] and subspaces[2] is subspaces[3]
    assert subspaces[1] is not subspaces[2] is not subspaces[4]


def test_projection_costs_no_privacy(setup):
    model, dataset = setup
    plain, projected = PrivacyLedger(1e-5), PrivacyLedger(1e-5)
    model_b = copy.deepcopy(model)
    ow_a = _wrapper(model, sigma=1.0, c=0.1, ledger=plain)
    ow_b = _wrapper(model_b, sigma=1.0, c=0.1, ledger=projected)
    ow_b.stages = [ProjectionStage(model_b, [dataset[i] for i in
                                             range(40, 44)], rank=4)]
    for _ in range(3):
        ow_a.private_step()
        ow_b.private_step()
    assert plain.segments == projected.segments
    assert plain.epsilon() == projected.epsilon()


def test_public_feature_gradient_is_added_unclipped_and_unnoised(setup):
    model, dataset = setup
    batch = pseudo_collate([dataset[i] for i in range(4)])
    public_batch = pseudo_collate([dataset[i] for i in range(10, 14)])
    c, weight, expected_batch = 1e-3, 0.5, 4.0
    model_dp = copy.deepcopy(model)
    # Reference 1: the DP-SGD update alone (sigma 0, tiny C: all clipped).
    ow = _wrapper(model_dp, sigma=0.0, c=c, batch=expected_batch)
    before = _params(model_dp)
    _private_step(model_dp, ow, batch)
    private_update = before - _params(model_dp)
    assert private_update.norm() <= c + 1e-6
    # Reference 2: the plain gradient of the public loss.
    params = [p for p in model.parameters() if p.requires_grad]
    public_grad = flatten(torch.autograd.grad(pose_loss(model, public_batch),
                                              params))
    assert public_grad.norm() > 100 * c  # so clipping it would show
    # FDP: both together.
    stage = PublicFeatureStage(model, [public_batch], weight=weight)
    ow = _wrapper(model, sigma=0.0, c=c, batch=expected_batch)
    ow.stages = [stage]
    before = _params(model)
    _private_step(model, ow, batch)
    update = before - _params(model)
    assert torch.allclose(update, private_update + weight * public_grad,
                          atol=1e-6, rtol=1e-4)


def test_public_forward_with_private_hooks_attached_is_refused(setup):
    model, dataset = setup
    batch = pseudo_collate([dataset[i] for i in range(2)])
    ow = _wrapper(model, sigma=0.0, c=1.0)
    ow.stages = [PublicFeatureStage(model, [batch])]
    with ow.engine.per_sample.private_forward():  # hooks on, not popped
        with pytest.raises(RuntimeError, match='still attached'):
            ow.stages[0](ow, [torch.zeros_like(p) for p in ow.params])
    ow.engine.per_sample.detach()


def test_public_feature_batches_are_drawn_independently(synthetic_mpii,
                                                        tmp_path):
    cfg = tiny_config(synthetic_mpii, str(tmp_path))
    loader = build_public_feature_loader(
        cfg.train_dataloader, dict(type='PublicFeatureBlur', kernel_size=7,
                                   sigma=2.5), batch_size=16)
    types = [type(t).__name__ for t in loader.dataset.pipeline.transforms]
    assert types.index('PublicFeatureBlur') == \
        types.index('TopdownAffine') + 1
    poisson = PoissonBatchSampler(loader.sampler, batch_size=16, seed=0)
    public_batches = [list(b) for _ in range(10) for b in
                      loader.batch_sampler]
    private_batches = [b for e in range(10) for b in
                       poisson.global_batches(e)]
    overlaps = [len(set(a) & set(b))
                for a, b in zip(public_batches, private_batches)]
    assert not any(set(a) == set(b) for a, b in
                   zip(public_batches, private_batches))
    # Independent draws of 16 of 64 and ~16 of 64 overlap ~4 on average.
    assert 2 < sum(overlaps) / len(overlaps) < 6


def test_a_batch_mean_basis_has_the_rank_of_its_groups(setup):
    # The paper's released code: 4 mini-batch-mean public gradients, so a
    # configured rank of 100 was really 4. 'batch_mean' offers it knowingly.
    model, dataset = setup
    samples = [dataset[i] for i in range(8)]
    params = [p for p in model.parameters() if p.requires_grad]
    G = public_per_sample_gradients(model, samples, params, torch.float32,
                                    group=4)
    assert G.shape[0] == 2
    per_sample = public_per_sample_gradients(model, samples[:4], params,
                                             torch.float32)
    # With a batch-mean loss, a group's gradient is its samples' mean.
    assert torch.allclose(G[0], per_sample.mean(0), atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match='exceeds the 2 public gradients'):
        ProjectionStage(model, samples, rank=3, basis='batch_mean',
                        basis_batch_size=4)
