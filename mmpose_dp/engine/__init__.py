"""MMEngine glue: registered components, thin over mmpose_dp.privacy."""
from . import checkpoint_loading  # noqa: F401  (registers the loader)
from . import honour_runner_type  # noqa: F401  (see its docstring)
from .cpu_distributed import (CPUDistributedDataParallel,
                              setup_cpu_distributed)
from .buffer_guard_hook import BufferGuardHook
from .log_processor import DPLogProcessor
from .loops import DPEpochBasedTrainLoop, split_batch
from .optim_wrapper import DPOptimWrapper, PrivacyBudgetExceeded
from .budget_stop_hook import BudgetStopHook
from .privacy_checkpoint_hook import PrivacyCheckpointHook
from .privacy_hook import PrivacyHook
from .privacy_logger_hook import PrivacyLoggerHook
from .privacy_session import PrivacySession, find_session
from .runner import DPRunner, apply_privacy

__all__ = [
    'BudgetStopHook', 'BufferGuardHook', 'CPUDistributedDataParallel',
    'DPEpochBasedTrainLoop', 'DPLogProcessor', 'DPOptimWrapper', 'DPRunner',
    'PrivacyBudgetExceeded', 'PrivacyCheckpointHook', 'PrivacyHook',
    'PrivacyLoggerHook', 'PrivacySession', 'apply_privacy', 'find_session',
    'setup_cpu_distributed', 'split_batch'
]
