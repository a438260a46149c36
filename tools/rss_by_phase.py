"""Peak resident memory of a ``tools/train.py`` run, split by phase.

Runs ``tools/train.py`` in this process with a thread that reads the RSS
every ``--interval`` seconds and charges it to the innermost phase running
(the sigma calibration and set-up, the first-step checks, the clipping
engine, the noise and optimizer step, data loading, ...). Prints one JSON
object: the run's peak RSS (``ru_maxrss``) and, per phase, the highest RSS
seen while it ran. The phase holding the run's peak is what a memory
target has to cut.

    python tools/rss_by_phase.py CONFIG --work-dir DIR [train.py options]
"""
import functools
import importlib
import json
import os
import os.path as osp
import resource
import runpy
import sys
import threading
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: phase -> (module, attribute path) of the functions it covers.
PHASES = {
    'privacy set-up (calibration, plan)': [
        ('mmpose_dp.engine.privacy_hook', 'PrivacyHook.before_run'),
        ('mmpose_dp.engine.privacy_hook', 'PrivacyHook.before_train')],
    'first-step checks': [
        ('mmpose_dp.privacy.engines.verification', 'verify_engine'),
        ('mmpose_dp.privacy.engines.hooks', 'check_same_loss')],
    'clipping engine': [
        ('mmpose_dp.privacy.engines.base', 'ClippingEngine.clipped_sum')],
    'noise and optimizer step': [
        ('mmpose_dp.engine.optim_wrapper', 'DPOptimWrapper.private_step')],
    'final accounting': [
        ('mmpose_dp.engine.privacy_logger_hook',
         'PrivacyLoggerHook.after_train')],
    'data loading': [
        ('torch.utils.data.dataloader', '_BaseDataLoaderIter.__next__')],
}
PAGE = os.sysconf('SC_PAGE_SIZE')


def rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Sampler(threading.Thread):
    """Charges the RSS read every ``interval`` s to the innermost phase."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.stack = interval, ['other']
        self.peaks: Dict[str, float] = {}
        self.running = True

    def charge(self) -> None:
        phase, now = self.stack[-1], rss_mib()
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), now)

    def run(self) -> None:
        while self.running:
            self.charge()
            time.sleep(self.interval)

    def wrap(self, phase: str, fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            self.stack.append(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self.charge()  # a phase shorter than the interval
                self.stack.pop()
        return inner


def patch(sampler: Sampler) -> None:
    """Wrap every function of PHASES where it is defined and where a module
    imported it by name."""
    for phase, targets in PHASES.items():
        for module_name, path in targets:
            owner = importlib.import_module(module_name)
            *parents, name = path.split('.')
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, name)
            wrapped = sampler.wrap(phase, original)
            setattr(owner, name, wrapped)
            if parents:
                continue
            for module in list(sys.modules.values()):
                if getattr(module, name, None) is original:
                    setattr(module, name, wrapped)


def main(argv: List[str]) -> Dict:
    interval = 0.02
    if argv[:1] == ['--interval']:
        interval, argv = float(argv[1]), argv[2:]
    sys.path.insert(0, ROOT)
    importlib.import_module('mmpose_dp')
    import mmpose_dp.privacy.engines.fast.engine  # noqa: F401 (re-imports)
    sampler = Sampler(interval)
    patch(sampler)
    sampler.start()
    sys.argv = [osp.join(ROOT, 'tools', 'train.py')] + argv
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
    finally:
        sampler.running = False
        sampler.charge()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = dict(peak_rss_mib=round(peak),
                  by_phase={k: round(v) for k, v in sorted(
                      sampler.peaks.items(), key=lambda kv: -kv[1])})
    print('RSS_BY_PHASE ' + json.dumps(result))
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
