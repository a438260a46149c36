"""The training log without the peak-memory field of private steps.

On a GPU, MMEngine's log line carries ``memory``: the peak memory so far,
which grows with the largest Poisson batch drawn, i.e. with private data.
:class:`DPLogProcessor` (set by ``apply_privacy``) drops it from training
log lines and scalars unless ``privacy.log_private_metrics=True``. The
iteration and data times stay: they grow with the realised batch size too,
a timing side channel outside the guarantee (README says so).
"""
import re

from mmengine.registry import LOG_PROCESSORS
from mmengine.runner import LogProcessor

_MEMORY = re.compile(r'memory: \S+\s+')


@LOG_PROCESSORS.register_module()
class DPLogProcessor(LogProcessor):
    """MMEngine's LogProcessor; train lines without ``memory``."""

    def get_log_after_iter(self, runner, batch_idx: int, mode: str):
        tag, log_str = super().get_log_after_iter(runner, batch_idx, mode)
        loop = getattr(runner, 'train_loop', None) if mode == 'train' \
            else None
        if mode == 'train' and not getattr(loop, 'log_private_metrics',
                                           False):
            tag.pop('memory', None)
            log_str = _MEMORY.sub('', log_str)
        return tag, log_str
