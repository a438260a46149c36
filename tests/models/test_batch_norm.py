import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from mmpose.registry import MODELS
from opacus.grad_sample import GradSampleHooks
from torch import nn

from mmpose_dp.models import NotPrivateError, check_no_cross_sample_modules
from mmpose_dp.models.batch_norm import (convert_batch_norm, group_count,
                                         is_batch_norm)
from mmpose_dp.models.frozen_batch_norm import (FrozenBatchNorm,
                                                frozen_batch_norm_grad_sample)
from mmpose_dp.models.validation import changed_buffers, snapshot_buffers
from mmpose_dp.privacy.per_sample import PerSampleGradients


def _randomise(bn: nn.Module) -> nn.Module:
    """Statistics and affine parameters far from their defaults."""
    with torch.no_grad():
        c = bn.num_features
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) + 0.5)
        bn.num_batches_tracked.fill_(7)
        bn.weight.copy_(torch.randn(c))
        bn.bias.copy_(torch.randn(c))
    return bn


def _bn_net(dtype=torch.float32) -> nn.Sequential:
    """conv + BN2d + ReLU + linear + BN1d on (N, C) + linear."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6),
        nn.Linear(6, 3))
    _randomise(net[1])
    _randomise(net[5])
    return net.to(dtype)


@pytest.mark.parametrize('bn,shape', [
    (nn.BatchNorm1d(3), (4, 3)),
    (nn.BatchNorm1d(3), (4, 3, 5)),
    (nn.BatchNorm2d(3), (4, 3, 5, 6)),
])
def test_frozen_batch_norm_equals_eval_batch_norm_in_either_mode(bn, shape):
    torch.manual_seed(0)
    bn = _randomise(bn).eval()
    x = torch.randn(shape)
    frozen = FrozenBatchNorm.from_batch_norm(bn)
    expected = bn(x)
    torch.testing.assert_close(frozen.eval()(x), expected)
    torch.testing.assert_close(frozen.train()(x), expected)
    # A batch-statistics normalisation would differ.
    assert not torch.allclose(bn.train()(x), expected)


def test_statistics_never_change_in_train_mode_while_affine_learns():
    net = _bn_net()
    convert_batch_norm(net, 'freeze')
    net.train()
    snapshot = snapshot_buffers(net)
    weight = net[1].weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 2, 5, 5) * 3 + 1).square().mean().backward()
        opt.step()
    assert changed_buffers(net, snapshot) == []
    assert not torch.equal(net[1].weight, weight)


def test_frozen_affine_is_not_trained():
    net = _bn_net()
    convert_batch_norm(net, 'freeze', trainable_affine=False)
    assert not net[1].weight.requires_grad and not net[5].bias.requires_grad
    net(torch.randn(2, 2, 5, 5)).sum().backward()
    assert net[1].weight.grad is None and net[5].bias.grad is None


def test_batch_norm_checkpoints_load_strictly_both_ways():
    checkpoint = _bn_net().state_dict()
    converted = _bn_net()
    with torch.no_grad():  # different values, so loading must change them
        converted[1].running_mean.add_(1)
    convert_batch_norm(converted, 'freeze')
    converted.load_state_dict(checkpoint, strict=True)
    assert torch.equal(converted[1].running_mean, checkpoint['1.running_mean'])
    assert set(converted.state_dict()) == set(checkpoint)

    stock = _bn_net()
    with torch.no_grad():
        converted[5].running_var.mul_(2)
        converted[5].weight.add_(1)
    stock.load_state_dict(converted.state_dict(), strict=True)
    x = torch.randn(3, 2, 5, 5)
    torch.testing.assert_close(stock.eval()(x), converted.train()(x))


def test_checkpoint_without_num_batches_tracked_loads_strictly():
    frozen = nn.Sequential(FrozenBatchNorm(3))
    old = {'0.weight': torch.full((3, ), 2.), '0.bias': torch.zeros(3),
           '0.running_mean': torch.ones(3), '0.running_var': torch.ones(3)}
    frozen.load_state_dict(_as_version_one(old), strict=True)
    assert torch.equal(frozen[0].weight, torch.full((3, ), 2.))


def _as_version_one(state):
    from collections import OrderedDict
    state = OrderedDict(state)
    state._metadata = OrderedDict({'0': dict(version=1)})
    return state


def _per_sample_autograd(net, x, y):
    """One backward per sample (micro-batches of one)."""
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        loss = nn.functional.mse_loss(net(x[i:i + 1]), y[i:i + 1],
                                      reduction='sum')
        rows.append(torch.autograd.grad(loss, params))
    return [torch.stack(g) for g in zip(*rows)]


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
def test_opacus_per_sample_gradients_are_exact(reduction):
    assert (GradSampleHooks.GRAD_SAMPLERS[FrozenBatchNorm]
            is frozen_batch_norm_grad_sample)
    net = _bn_net(torch.float64)
    convert_batch_norm(net, 'freeze')
    net.train()
    torch.manual_seed(1)
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    expected = _per_sample_autograd(net, x, y)

    hooks = GradSampleHooks(net, batch_first=True, loss_reduction=reduction,
                            strict=False)
    try:
        per_sample = nn.functional.mse_loss(net(x), y, reduction='none')
        loss = per_sample.sum(1)
        (loss.mean() if reduction == 'mean' else loss.sum()).backward()
        got = [p.grad_sample for p in net.parameters()]
    finally:
        hooks.cleanup()
    assert len(got) == len(expected) == 10
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert getattr(net[1].weight, 'grad_sample', None) is None  # cleaned up
    assert bool(expected[2].abs().sum() > 0)  # BN2d weight: not trivial


def test_frozen_affine_gets_no_per_sample_gradient():
    net = _bn_net()
    convert_batch_norm(net, 'freeze', trainable_affine=False)
    net.train()
    grads = PerSampleGradients(net, 'mean')
    assert not any(n.startswith(('1.', '5.')) for n in grads.names)
    with grads.private_forward():
        loss = net(torch.randn(4, 2, 5, 5)).square().sum(1).mean()
    loss.backward()
    assert getattr(net[1].weight, 'grad_sample', None) is None
    rows = grads.pop(4)
    assert [r.shape[0] for r in rows] == [4] * len(grads.names) == [4] * 6


@pytest.mark.parametrize('channels,groups', [(64, 32), (48, 24), (36, 18),
                                             (16, 16), (7, 7), (3, 3)])
def test_group_count_is_the_largest_divisor_not_above_num_groups(
        channels, groups):
    assert group_count(channels, 32) == groups


def test_group_norm_mode_starts_afresh_and_reports_regrouped_layers():
    net = nn.Sequential(nn.Conv2d(3, 48, 1), _randomise(nn.BatchNorm2d(48)),
                        nn.Conv2d(48, 64, 1),
                        _randomise(nn.BatchNorm2d(64, eps=1e-3)))
    report = convert_batch_norm(net, 'group_norm')
    assert report['count'] == 2 and report['names'] == ['1', '3']
    assert report['regrouped'] == ['1 (48 channels): 24 groups']
    assert isinstance(net[1], nn.GroupNorm) and net[1].num_groups == 24
    assert net[3].num_groups == 32 and net[3].eps == 1e-3
    assert torch.equal(net[3].weight, torch.ones(64))
    assert torch.equal(net[3].bias, torch.zeros(64))
    assert net[3].weight.requires_grad


def test_validation_refuses_batch_norm_and_accepts_both_conversions():
    with pytest.raises(NotPrivateError, match='2 module'):
        check_no_cross_sample_modules(_bn_net().train())
    for mode in ('freeze', 'group_norm'):
        net = _bn_net()
        convert_batch_norm(net, mode)
        check_no_cross_sample_modules(net.train())


def test_shared_layer_is_replaced_everywhere_by_one_module():
    bn = nn.BatchNorm1d(4)
    net = nn.Sequential(nn.Linear(4, 4), bn, nn.Linear(4, 4), bn)
    report = convert_batch_norm(net, 'freeze')
    assert report['count'] == 1 and report['names'] == ['1', '3']
    assert net[1] is net[3] and isinstance(net[1], FrozenBatchNorm)


def test_unknown_mode_and_statistics_free_batch_norm_are_refused():
    with pytest.raises(ValueError, match='accepted: freeze, group_norm'):
        convert_batch_norm(_bn_net(), 'sync')
    net = nn.Sequential(nn.Linear(2, 4),
                        nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\).*'group_norm'"):
        convert_batch_norm(net, 'freeze')


def test_mmcv_sync_batch_norm_is_converted(tmp_path):
    import torch.distributed as dist
    from mmcv.ops import SyncBatchNorm as MMSyncBN
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        for mode, cls in (('freeze', FrozenBatchNorm),
                          ('group_norm', nn.GroupNorm)):
            net = nn.Sequential(nn.Conv2d(3, 4, 1), MMSyncBN(4),
                                nn.SyncBatchNorm(4))
            assert convert_batch_norm(net, mode)['count'] == 2
            assert isinstance(net[1], cls) and isinstance(net[2], cls)
    finally:
        dist.destroy_process_group()


def _estimator():
    init_default_scope('mmpose')
    return MODELS.build(dict(
        type='TopdownPoseEstimator',
        backbone=dict(type='ResNet', depth=18, stem_channels=16,
                      base_channels=8, norm_cfg=dict(type='BN')),
        head=dict(type='HeatmapHead', in_channels=64, out_channels=4,
                  deconv_out_channels=(16, ), deconv_kernel_sizes=(4, ),
                  loss=dict(type='KeypointMSELoss'),
                  decoder=dict(type='MSRAHeatmap', input_size=(64, 64),
                               heatmap_size=(4, 4), sigma=1))))


@pytest.mark.parametrize('mode', ['freeze', 'group_norm'])
def test_mmpose_estimator_converts_fully_head_included(mode):
    model = _estimator()
    before = [n for n, m in model.named_modules() if is_batch_norm(m)]
    assert 'head.deconv_layers.1' in before
    reference = copy.deepcopy(model).eval()
    report = convert_batch_norm(model, mode, num_groups=32)
    assert report['names'] == before and report['count'] == len(before)
    assert not any(is_batch_norm(m) for m in model.modules())
    model.train()
    check_no_cross_sample_modules(model)
    x = torch.randn(2, 3, 64, 64)
    out = model(x, None, mode='tensor')
    assert out.shape == (2, 4, 4, 4)
    if mode == 'freeze':  # the same function as the BN model in eval mode
        torch.testing.assert_close(out, reference(x, None, mode='tensor'))
        model.load_state_dict(reference.state_dict(), strict=True)
