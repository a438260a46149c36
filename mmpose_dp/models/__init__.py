from .batch_norm import (FrozenBatchNorm, convert_batch_norm, group_count,
                         is_batch_norm)
from . import fast_layers  # noqa: F401  (declares MMCV layers to fast)
from .compat import patch_for_per_sample_gradients
from .group_norm_estimator import GroupNormTopdownPoseEstimator
from .group_norm_heads import GNHeatmapHead, GNSimCCHead, replace_batch_norm
from .loss_reduction import KNOWN_LOSS_REDUCTIONS, detect_loss_reduction
from .trainable import select_trainable, trainable_names
from .upsample_simcc_head import UpsampleSimCCHead
from .validation import (NotPrivateError, changed_buffers,
                         check_no_cross_sample_modules, cross_sample_modules,
                         snapshot_buffers)

__all__ = [
    'FrozenBatchNorm', 'convert_batch_norm', 'group_count', 'is_batch_norm',
    'patch_for_per_sample_gradients', 'GroupNormTopdownPoseEstimator',
    'GNHeatmapHead', 'GNSimCCHead', 'replace_batch_norm',
    'KNOWN_LOSS_REDUCTIONS', 'detect_loss_reduction', 'select_trainable',
    'trainable_names', 'UpsampleSimCCHead', 'NotPrivateError', 'changed_buffers',
    'check_no_cross_sample_modules', 'cross_sample_modules',
    'snapshot_buffers'
]
