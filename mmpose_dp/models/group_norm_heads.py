"""MMPose heads whose optional conv/deconv stacks use GroupNorm.

``HeatmapHead`` and ``SimCCHead`` build their deconv/conv stacks with a
hard-coded ``nn.BatchNorm2d`` that no config can change (SimpleBaseline's
three deconvs, for instance). These registered subclasses take a
``norm_cfg`` and build the same stacks with it, so parameter names and
shapes are unchanged and checkpoints stay interchangeable apart from the
BatchNorm running statistics.
"""
from mmcv.cnn import build_norm_layer
from mmpose.models.heads import HeatmapHead, SimCCHead
from mmpose.registry import MODELS
from torch import nn

DEFAULT_NORM = dict(type='GN', num_groups=32)


def replace_batch_norm(module: nn.Module, norm_cfg: dict) -> int:
    """Replace every ``nn.BatchNorm2d`` child of ``module`` (recursively)
    with ``build_norm_layer(norm_cfg, channels)``; returns the count."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name,
                    build_norm_layer(norm_cfg, child.num_features)[1])
            count += 1
        else:
            count += replace_batch_norm(child, norm_cfg)
    return count


@MODELS.register_module()
class GNHeatmapHead(HeatmapHead):
    """``HeatmapHead`` with ``norm_cfg`` (default GroupNorm, 32 groups) in
    its deconv/conv stacks."""

    def __init__(self, *args, norm_cfg: dict = DEFAULT_NORM, **kwargs):
        super().__init__(*args, **kwargs)
        replace_batch_norm(self, norm_cfg)

    @property
    def default_init_cfg(self):
        return [
            dict(type='Normal', layer=['Conv2d', 'ConvTranspose2d'],
                 std=0.001),
            dict(type='Constant', layer='GroupNorm', val=1)
        ]


@MODELS.register_module()
class GNSimCCHead(SimCCHead):
    """``SimCCHead`` with ``norm_cfg`` (default GroupNorm, 32 groups) in its
    deconv/conv stacks."""

    def __init__(self, *args, norm_cfg: dict = DEFAULT_NORM, **kwargs):
        super().__init__(*args, **kwargs)
        replace_batch_norm(self, norm_cfg)
