from .group_norm_heads import GNHeatmapHead, GNSimCCHead, replace_batch_norm
from .loss_reduction import KNOWN_LOSS_REDUCTIONS, detect_loss_reduction
from .validation import (NotPrivateError, changed_buffers,
                         check_no_cross_sample_modules, cross_sample_modules,
                         snapshot_buffers)

__all__ = [
    'GNHeatmapHead', 'GNSimCCHead', 'replace_batch_norm',
    'KNOWN_LOSS_REDUCTIONS', 'detect_loss_reduction', 'NotPrivateError',
    'changed_buffers', 'check_no_cross_sample_modules',
    'cross_sample_modules', 'snapshot_buffers'
]
