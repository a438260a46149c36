"""BatchNorm on 1x1 pooled maps (ResNeSt's split attention) is kept as a
fixed-statistics affine map when the rest becomes GroupNorm."""
import torch
from mmengine.registry import init_default_scope
from torch import nn

from mmpose_dp.engine.model_preparation import prepare_private_model
from mmpose_dp.models import FrozenBatchNorm, is_batch_norm
from mmpose_dp.models.single_value_norms import single_value_batch_norms

from tiny_families import tiny_model_config


def _model(family):
    init_default_scope('mmpose')
    from mmpose.registry import MODELS
    cfg, _ = tiny_model_config(family)
    torch.manual_seed(0)
    return MODELS.build(cfg), cfg


def test_resnest_split_attention_norms_stay_affine_and_one_image_runs():
    model, cfg = _model('resnest')
    pooled = single_value_batch_norms(model, cfg.head.decoder.input_size)
    assert pooled and all(n.endswith('.conv2.bn1') for n in pooled)
    spatial = [n for n, m in model.named_modules()
               if is_batch_norm(m) and n not in pooled]
    summary = prepare_private_model(model, dict(batch_norm='group_norm'),
                                    cfg, load_from=None, resume=False,
                                    work_dir=None)
    assert summary['batch_norm']['affine_only'] == len(pooled)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], FrozenBatchNorm) for n in pooled)
    assert all(isinstance(modules[n], nn.GroupNorm) for n in spatial)
    frozen = modules[pooled[0]]
    assert frozen.weight.requires_grad and frozen.bias.requires_grad
    # One image, in train and eval mode: GroupNorm there raised
    # "Expected more than 1 value per channel".
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=generator)
    for training in (True, False):
        model.train(training)
        heatmaps = model(image, None, mode='tensor')
        assert heatmaps.shape[0] == 1 and torch.isfinite(heatmaps).all()
    # The attention still depends on the input (a GroupNorm of single
    # values would output its bias for every image).
    model.eval()
    attention = modules[pooled[0].rsplit('.', 1)[0]]
    outputs = []
    handle = attention.norm1.register_forward_hook(
        lambda m, a, out: outputs.append(out.detach()))
    model(torch.rand(2, 3, 64, 64, generator=generator), None, mode='tensor')
    handle.remove()
    assert not torch.allclose(outputs[0][0], outputs[0][1])


def test_models_without_pooled_norms_are_all_group_normed():
    model, cfg = _model('seresnet')  # its squeeze-excitation has no norm
    assert single_value_batch_norms(model, cfg.head.decoder.input_size) == []
    summary = prepare_private_model(model, dict(batch_norm='group_norm'),
                                    cfg, load_from=None, resume=False,
                                    work_dir=None)
    assert summary['batch_norm']['affine_only'] == 0
    assert not any(isinstance(m, FrozenBatchNorm) for m in model.modules())


def test_the_export_rebuilds_the_same_network():
    # build_private_model (export, tools) must convert as DPRunner did, or
    # the trained weights would not load strictly.
    from mmengine.config import Config

    from mmpose_dp.export import build_private_model
    from mmpose_dp.privacy import PrivacyPlan
    trained, cfg = _model('resnest')
    prepare_private_model(trained, dict(batch_norm='group_norm'), cfg,
                          load_from=None, resume=False, work_dir=None)
    plan = PrivacyPlan(
        unit='image', n_private=8, private_data=None, target_epsilon=1.0,
        delta=1e-3, sample_rate=0.25, total_steps=4, noise_multiplier=1.0,
        sigma_source='calibrated', max_grad_norm=1.0, method='DP-SGD',
        labels_public=False, privacy_unit='an image', protected='all',
        public='nothing', batch_norm=dict(mode='group_norm'))
    rebuilt = build_private_model(
        Config(dict(model=cfg.to_dict(), default_scope='mmpose')), plan)
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    assert [type(m) for m in rebuilt.modules()] == \
        [type(m) for m in trained.modules()]
