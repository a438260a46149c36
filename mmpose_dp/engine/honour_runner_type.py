"""Make ``Runner.from_cfg`` honour ``runner_type='DPRunner'``.

MMPose 1.3.2's own ``tools/train.py`` and ``tools/test.py`` build the runner
with ``Runner.from_cfg(cfg)``, which ignores ``runner_type`` (MMDet's tools use
``RUNNERS.build``). A DP config run with them would build a plain Runner and
train WITHOUT differential privacy, silently. Importing ``mmpose_dp`` (every
DP config does, through ``custom_imports``) wraps ``Runner.from_cfg`` so that a
config naming ``runner_type='DPRunner'`` builds a DPRunner. Nothing else
changes: other runner types and subclasses take the original path.
"""
from mmengine.runner import Runner

from .runner import DPRunner

_original_from_cfg = Runner.__dict__['from_cfg'].__func__


def _from_cfg(cls, cfg):
    if cls is Runner and cfg.get('runner_type') == 'DPRunner':
        return DPRunner.from_cfg(cfg)  # whose super() call lands below
    return _original_from_cfg(cls, cfg)


Runner.from_cfg = classmethod(_from_cfg)
