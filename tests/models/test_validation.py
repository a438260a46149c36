import pytest
import torch
from mmengine.registry import init_default_scope
from mmpose.registry import MODELS
from torch import nn

from mmpose_dp.models import (NotPrivateError, changed_buffers,
                              check_no_cross_sample_modules,
                              detect_loss_reduction, snapshot_buffers)


def _estimator(norm_cfg, loss=dict(type='KeypointMSELoss')):
    init_default_scope('mmpose')
    return MODELS.build(dict(
        type='TopdownPoseEstimator',
        backbone=dict(type='ResNet', depth=18, stem_channels=16,
                      base_channels=8, norm_cfg=norm_cfg, norm_eval=False),
        head=dict(type='HeatmapHead', in_channels=64, out_channels=16,
                  deconv_out_channels=None, loss=loss,
                  decoder=dict(type='MSRAHeatmap', input_size=(64, 64),
                               heatmap_size=(2, 2), sigma=1))))


def test_batchnorm_is_refused_with_the_module_names_and_the_fix():
    model = _estimator(dict(type='BN'))
    model.train()
    with pytest.raises(NotPrivateError) as err:
        check_no_cross_sample_modules(model)
    msg = str(err.value)
    assert 'backbone.bn1 (BatchNorm2d)' in msg
    assert "norm_cfg=dict(type='GN'" in msg


def test_frozen_batchnorm_in_train_mode_is_refused():
    model = _estimator(dict(type='BN', requires_grad=False))
    model.train()
    with pytest.raises(NotPrivateError, match='BatchNorm2d'):
        check_no_cross_sample_modules(model)


def test_frozen_batchnorm_in_eval_mode_is_accepted():
    init_default_scope('mmpose')
    model = MODELS.build(dict(type='ResNet', depth=18, stem_channels=16,
                              base_channels=8,
                              norm_cfg=dict(type='BN', requires_grad=False),
                              norm_eval=True))
    model.train()  # norm_eval keeps BatchNorm in eval mode
    check_no_cross_sample_modules(model)


def test_groupnorm_model_is_accepted():
    model = _estimator(dict(type='GN', num_groups=4))
    model.train()
    check_no_cross_sample_modules(model)


def test_loss_reductions_are_detected():
    assert detect_loss_reduction(
        _estimator(dict(type='GN', num_groups=4))) == 'mean'


def test_unknown_loss_is_refused_unless_declared():
    model = _estimator(dict(type='GN', num_groups=4),
                       loss=dict(type='AdaptiveWingLoss'))
    with pytest.raises(NotPrivateError, match="loss_reduction='mean'"):
        detect_loss_reduction(model)
    assert detect_loss_reduction(model, declared='mean') == 'mean'


def test_losses_held_in_a_module_list_are_each_checked():
    # MSPN/RSN heads keep one loss per stage in a ModuleList; a batch-mixing
    # BoneLoss there was taken for a per-sample mean (only names ending in
    # 'loss*' were looked at, and 'head.loss_module.1' ends in '1').
    model = _estimator(dict(type='GN', num_groups=4))
    model.head.loss_module = nn.ModuleList(
        [MODELS.build(dict(type='KeypointMSELoss')),
         MODELS.build(dict(type='BoneLoss', joint_parents=[0] * 16))])
    with pytest.raises(NotPrivateError,
                       match=r'BoneLoss \(at head\.loss_module\.1\)'):
        detect_loss_reduction(model)
    with pytest.raises(NotPrivateError, match='BoneLoss'):
        detect_loss_reduction(model, declared='mean')
    model.head.loss_module[1] = MODELS.build(dict(type='AdaptiveWingLoss'))
    with pytest.raises(NotPrivateError, match=r'head\.loss_module\.1'):
        detect_loss_reduction(model)
    model.head.loss_module[1] = MODELS.build(
        dict(type='KeypointOHKMMSELoss', topk=4))
    assert detect_loss_reduction(model) == 'mean'


def _vis_estimator(**bce):
    """A VisPredictHead (visibility BCE beside the heatmap loss)."""
    init_default_scope('mmpose')
    return MODELS.build(dict(
        type='TopdownPoseEstimator',
        backbone=dict(type='ResNet', depth=18, stem_channels=16,
                      base_channels=8, norm_cfg=dict(type='GN', num_groups=4)),
        head=dict(type='VisPredictHead',
                  loss=dict(type='BCELoss', use_sigmoid=True, **bce),
                  pose_cfg=dict(
                      type='HeatmapHead', in_channels=64, out_channels=16,
                      deconv_out_channels=None,
                      loss=dict(type='KeypointMSELoss', use_target_weight=True),
                      decoder=dict(type='MSRAHeatmap', input_size=(64, 64),
                                   heatmap_size=(2, 2), sigma=1)))))


def test_a_visibility_bce_loss_reduces_as_configured():
    assert detect_loss_reduction(_vis_estimator(use_target_weight=True)) \
        == 'mean'
    # BCE summed and the heatmap loss averaged: no single reduction.
    with pytest.raises(NotPrivateError, match='reduce differently'):
        detect_loss_reduction(_vis_estimator(reduction='sum'))
    # 'none' leaves the batch reduction to the caller: declare it.
    with pytest.raises(NotPrivateError, match='cannot tell how BCELoss'):
        detect_loss_reduction(_vis_estimator(reduction='none'))


def test_declaration_cannot_contradict_a_known_loss():
    model = _estimator(dict(type='GN', num_groups=4))
    with pytest.raises(NotPrivateError, match='contradicts'):
        detect_loss_reduction(model, declared='sum')


def test_buffer_changes_are_detected():
    bn = nn.BatchNorm1d(3)
    snap = snapshot_buffers(bn)
    bn.train()
    bn(torch.randn(4, 3))
    assert 'running_mean' in changed_buffers(bn, snap)
    assert changed_buffers(bn, snapshot_buffers(bn)) == []


def test_sync_batchnorms_are_refused_at_start(tmp_path):
    import torch.distributed as dist
    from mmcv.ops import SyncBatchNorm as MMSyncBN
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        for norm in (nn.SyncBatchNorm(4), MMSyncBN(4)):
            model = nn.Sequential(nn.Conv2d(3, 4, 1), norm).train()
            with pytest.raises(NotPrivateError, match='1 module'):
                check_no_cross_sample_modules(model)
    finally:
        dist.destroy_process_group()


class _RunningStatistics(nn.Module):
    """No norm layer, but a buffer that learns from the data in train
    mode."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.register_buffer('running_max', torch.zeros(3))

    def forward(self, x):
        if self.training:
            self.running_max = torch.maximum(self.running_max, x.amax(0))
        return self.fc(x)


def test_any_module_with_running_statistics_is_refused_at_start():
    model = nn.Sequential(_RunningStatistics()).train()
    with pytest.raises(NotPrivateError, match=r'0 \(_RunningStatistics'):
        check_no_cross_sample_modules(model)
    check_no_cross_sample_modules(model.eval())  # eval mode: a fixed map
