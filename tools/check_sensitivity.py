"""Check a config's DP step on neighbouring data sets: PASS or FAIL.

Runs the production step (DPRunner: Poisson sampler, loop, unit grouping,
clipping engine, stages, DPOptimWrapper) on the config's training set D, on
D without one privacy unit and on D with that unit replaced, with the same
fixed secrets and sigma = 0, loading the same weights before every step,
and prints the worst difference of the released sums in units of C
(at most 1 removed, 2 replaced), plus a noise check at sigma = 1
(``mmpose_dp.engine.sensitivity_check``). Use it on test data: its secrets
are fixed.

``--self-check`` runs the check again under deliberately broken mechanisms
(``mmpose_dp.engine.planted_bugs``: clipping off in each engine, a unit
split across micro-batches, the noise divided by 16 processes, vmap
training every sample on sample 0's targets, BandMF ignoring its groups or
adding white noise) and reports whether each is caught (the check FAILs).

Usage::

    python tools/check_sensitivity.py CONFIG [--steps 3] [--engine vmap] \\
        [--unit instance] [--self-check] [--json] [--cfg-options ...]
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional

from mmengine.config import Config, DictAction

from mmpose_dp.engine.planted_bugs import PLANTED
from mmpose_dp.engine.sensitivity_check import check_sensitivity

#: Planted bugs that need a given engine; clipping-off runs per engine.
NEEDS_ENGINE = {'vmap-targets-of-sample-0': 'vmap'}
#: Planted bugs of a mechanism: their runs use it (and check the noise).
NEEDS_MECHANISM = {
    'banded-groups-ignored': dict(type='banded_mf', bands=2),
    'banded-noise-white': dict(type='banded_mf', bands=2),
}
#: Planted bugs whose check needs the noise run.
NEEDS_NOISE = {'noise-divided-by-processes', 'banded-noise-white'}
ENGINES = ('fast', 'hooks', 'vmap')


def self_check(cfg: Config, work_dir: str, steps: int,
               options: Dict, engines=ENGINES,
               bugs: Optional[List[str]] = None) -> List[Dict]:
    """The check under each planted bug; ``caught`` when it FAILs. A
    planted bug whose engine cannot run the model is reported as such."""
    rows = []
    for bug in bugs or list(PLANTED):
        for engine in (engines if bug == 'clipping-off' else
                       [NEEDS_ENGINE.get(bug)]):
            run_options = dict(options)
            if engine:
                run_options['privacy.engine'] = engine
            if bug in NEEDS_MECHANISM:
                run_options['privacy.mechanism'] = NEEDS_MECHANISM[bug]
            name = bug + (f'-{engine}' if engine else '')
            try:
                with PLANTED[bug]():
                    report = check_sensitivity(
                        cfg, osp.join(work_dir, name), steps,
                        noise=bug in NEEDS_NOISE, options=run_options, log=lambda line: None)
            except Exception as err:  # noqa: BLE001 (reported)
                rows.append(dict(bug=name, caught=None,
                                 result=f'{type(err).__name__}: {err}'))
                continue
            rows.append(dict(bug=name, caught=not report['passed'],
                             result='; '.join(report['failures']) or
                             'the check passed'))
    return rows


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--max-grad-norm', type=float, default=1e-4,
                        help='C of the check (small: every unit clipped)')
    parser.add_argument('--engine', help='privacy.engine for the check')
    parser.add_argument('--unit', help="privacy.unit: 'image'/'instance'")
    parser.add_argument('--no-noise', action='store_true',
                        help='skip the sigma = 1 noise check')
    parser.add_argument('--self-check', action='store_true')
    parser.add_argument('--work-dir', help='default: a temporary folder')
    parser.add_argument('--json', action='store_true',
                        help='last line of stdout: one JSON object')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    options = dict(args.cfg_options or {})
    if args.engine:
        options['privacy.engine'] = args.engine
    if args.unit:
        options['privacy.unit'] = args.unit
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='check_sensitivity_')
    os.makedirs(work_dir, exist_ok=True)
    report = check_sensitivity(cfg, osp.join(work_dir, 'check'), args.steps,
                               args.max_grad_norm, not args.no_noise,
                               options)
    if args.self_check:
        report['self_check'] = self_check(cfg, osp.join(work_dir, 'planted'),
                                          args.steps, options)
        for row in report['self_check']:
            verdict = {True: 'caught', False: 'NOT caught',
                       None: 'could not run'}[row['caught']]
            print(f"self-check {row['bug']}: {verdict} ({row['result']})")
    with open(osp.join(work_dir, 'sensitivity.json'), 'w') as f:
        json.dump(report, f, indent=1, default=str)
    if args.json:
        print(json.dumps(report, default=str), flush=True)
    return report


if __name__ == '__main__':
    result = main()
    ok = result['passed'] and all(
        row['caught'] is not False for row in result.get('self_check', []))
    sys.exit(0 if ok else 1)
