"""Make ``Runner.from_cfg`` honour ``runner_type='DPRunner'``, and refuse a
config with a ``privacy`` section that another runner would build.

MMPose 1.3.2's own ``tools/train.py`` and ``tools/test.py`` build the runner
with ``Runner.from_cfg(cfg)``, which ignores ``runner_type`` (MMDet's tools use
``RUNNERS.build``, which calls ``from_cfg`` of the named class). A DP config
run with them would build a plain Runner and train WITHOUT differential
privacy, silently. Importing ``mmpose_dp`` (every DP config does, through
``__import__``, or ``custom_imports`` in a dumped config) wraps
``Runner.from_cfg``:

* a config naming ``runner_type='DPRunner'`` builds a DPRunner;
* a config with a ``privacy`` section built by any other runner class (for
  instance ``runner_type`` overridden) is refused;
* every other config takes the original path.
"""
from mmengine.runner import Runner

from ..privacy import NotPrivateError
from .runner import DPRunner

_original_from_cfg = Runner.__dict__['from_cfg'].__func__


def _from_cfg(cls, cfg):
    if cls is Runner and cfg.get('runner_type') == 'DPRunner':
        return DPRunner.from_cfg(cfg)  # whose super() call lands below
    if cfg.get('privacy') is not None and not issubclass(cls, DPRunner):
        raise NotPrivateError(
            f'this config has a privacy section, but {cls.__name__} (from '
            f"runner_type={cfg.get('runner_type')!r}) would train it without "
            "differential privacy. Set runner_type='DPRunner' (the mixin "
            'configs/_base_/dp_sgd.py does), or remove the privacy section '
            'to train without a guarantee')
    return _original_from_cfg(cls, cfg)


Runner.from_cfg = classmethod(_from_cfg)
