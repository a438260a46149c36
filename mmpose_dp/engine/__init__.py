"""MMEngine glue: registered components, thin over mmpose_dp.privacy."""
from . import checkpoint_loading  # noqa: F401  (registers the loader)
from . import honour_runner_type  # noqa: F401  (see its docstring)
from .cpu_distributed import (CPUDistributedDataParallel,
                              setup_cpu_distributed)
from .buffer_guard_hook import BufferGuardHook
from .log_processor import DPLogProcessor
from .loops import DPEpochBasedTrainLoop, split_batch
from .optim_wrapper import DPOptimWrapper, PrivacyBudgetExceeded
from .privacy_hook import PrivacyHook
from .runner import DPRunner, apply_privacy

__all__ = [
    'CPUDistributedDataParallel', 'setup_cpu_distributed',
    'DPEpochBasedTrainLoop', 'DPLogProcessor', 'split_batch', 'DPOptimWrapper',
    'PrivacyBudgetExceeded', 'PrivacyHook', 'BufferGuardHook', 'DPRunner', 'apply_privacy'
]
