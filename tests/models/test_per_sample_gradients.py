"""Per-sample gradients of real MMPose models equal micro-batched ones."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmpose.registry import DATASETS, MODELS

from mmpose_dp.models import detect_loss_reduction
from mmpose_dp.privacy import PerSampleGradients, disable_inplace_activations

from ..conftest import TINY_CONFIG

GN4 = dict(type='GN', num_groups=4)
TINY_RESNET = dict(type='ResNet', depth=18, stem_channels=16,
                   base_channels=8, norm_cfg=GN4, norm_eval=False)


def _tiny_hrnet(cfg):
    return copy.deepcopy(cfg.model)


def _tiny_resnet_heatmap(cfg):
    model = copy.deepcopy(cfg.model)
    model.backbone = TINY_RESNET
    codec = dict(type='MSRAHeatmap', input_size=(64, 64),
                 heatmap_size=(8, 8), sigma=1)
    model.head = dict(type='GNHeatmapHead', in_channels=64, out_channels=16,
                      deconv_out_channels=(16, 16),
                      deconv_kernel_sizes=(4, 4), norm_cfg=GN4,
                      loss=dict(type='KeypointMSELoss',
                                use_target_weight=True),
                      decoder=codec)
    return model, codec


def _tiny_simcc(cfg):
    model = copy.deepcopy(cfg.model)
    model.backbone = TINY_RESNET
    codec = dict(type='SimCCLabel', input_size=(64, 64), sigma=2.0,
                 simcc_split_ratio=2.0)
    model.head = dict(type='GNSimCCHead', in_channels=64, out_channels=16,
                      input_size=(64, 64), in_featuremap_size=(2, 2),
                      simcc_split_ratio=2.0, deconv_out_channels=None,
                      norm_cfg=GN4,
                      loss=dict(type='KLDiscretLoss', use_target_weight=True),
                      decoder=codec)
    return model, codec


def _build(kind, data_root):
    init_default_scope('mmpose')
    cfg = Config.fromfile(TINY_CONFIG)
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = data_root + '/'
    if kind == 'hrnet':
        model_cfg = _tiny_hrnet(cfg)
    else:
        model_cfg, codec = (_tiny_resnet_heatmap(cfg) if kind == 'resnet'
                            else _tiny_simcc(cfg))
        for t in dataset_cfg.pipeline:
            if t['type'] == 'GenerateTarget':
                t['encoder'] = codec
    # No flip: the same sample must give the same input in both passes.
    dataset_cfg.pipeline = [t for t in dataset_cfg.pipeline
                            if t['type'] != 'RandomFlip']
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.train()
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[i] for i in range(5)])
    data = model.data_preprocessor(batch, training=True)
    return model, data


def _loss(model, inputs, data_samples):
    losses = model.loss(inputs, data_samples)
    loss, _ = model.parse_losses(losses)
    return loss


@pytest.mark.parametrize('kind,reduction', [('hrnet', 'mean'),
                                            ('resnet', 'mean'),
                                            ('simcc', 'sum')])
def test_per_sample_equal_micro_batched(kind, reduction, synthetic_mpii):
    model, data = _build(kind, synthetic_mpii)
    assert detect_loss_reduction(model) == reduction
    disable_inplace_activations(model)
    per_sample = PerSampleGradients(model, reduction)
    with per_sample.private_forward():
        loss = _loss(model, data['inputs'], data['data_samples'])
    loss.backward()
    grads = per_sample.pop()
    assert not per_sample.attached
    n = len(data['data_samples'])
    assert all(g.shape[0] == n for g in grads)
    for i in range(n):
        model.zero_grad()
        _loss(model, data['inputs'][i:i + 1],
              data['data_samples'][i:i + 1]).backward()
        for p, g in zip(per_sample.params, grads):
            ref = p.grad if p.grad is not None else torch.zeros_like(p)
            scale = ref.abs().max().clamp(min=1e-8)
            assert ((g[i] - ref).abs().max() / scale) < 1e-3


def test_wrong_reduction_would_scale_gradients(synthetic_mpii):
    # The check above can fail: 'sum' on a mean-reduced loss is B times off.
    model, data = _build('hrnet', synthetic_mpii)
    disable_inplace_activations(model)
    per_sample = PerSampleGradients(model, 'sum')
    with per_sample.private_forward():
        loss = _loss(model, data['inputs'], data['data_samples'])
    loss.backward()
    wrong = per_sample.pop()
    model.zero_grad()
    _loss(model, data['inputs'][:1], data['data_samples'][:1]).backward()
    p, g = per_sample.params[-1], wrong[-1]
    ratio = (p.grad.norm() / g[0].norm()).item()
    assert ratio == pytest.approx(5, rel=1e-3)
