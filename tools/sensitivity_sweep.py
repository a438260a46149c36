"""Run the neighbouring-dataset check on every config of this project and
on MMPose's 31 stock MPII top-down configs (their model families).

Each config runs through ``mmpose_dp.engine.sensitivity_check`` on a
generated MPII-format set (256x256, 2-3 people per image) with an expected
batch of 4 and 3 steps; this project's configs as they are (PDP's public
set shrunk to 24 records, ``load_from`` dropped: the check needs no
pretrained weights), the stock ones through the mixin exactly as
``tools/stock_config_coverage.py`` writes them. Resumable: a config already
in ``sensitivity.json`` is skipped. Writes ``sensitivity.json`` and
``sensitivity.md`` (the table in ``docs/sensitivity_check.md``).

Usage::

    python tools/sensitivity_sweep.py --out work_dirs/sensitivity_sweep \\
        [--only PATTERN ...] [--project-only | --stock-only]
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))

#: What every check run gets (generated data, small batch, no weights).
OPTIONS = {'train_dataloader.batch_size': 4, 'load_from': None}
PDP_OPTIONS = {'privacy.public_data.num_samples': 24,
               'privacy.projection.rank': 8}


def project_configs() -> List[str]:
    return sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))


def _data_options(data: str) -> Dict:
    root = data.rstrip('/') + '/'
    return {'train_dataloader.dataset.data_root': root,
            'train_dataloader.num_workers': 0,
            'train_dataloader.persistent_workers': False}


def run_one(config: str, data: str, out: str, steps: int) -> Dict:
    from mmengine.config import Config
    from mmpose_dp.engine.sensitivity_check import check_sensitivity
    name = osp.splitext(osp.basename(config))[0]
    cfg = Config.fromfile(config)
    options = dict(OPTIONS, **_data_options(data))
    if cfg.privacy.get('projection') is not None:
        options.update(PDP_OPTIONS)
    start = time.time()
    try:
        report = check_sensitivity(cfg, osp.join(out, name), steps,
                                   options=options, log=lambda line: None)
    except Exception as err:  # noqa: BLE001 (reported in the table)
        return dict(config=name, status='error', seconds=round(
            time.time() - start), reason=f'{type(err).__name__}: {err}'[:300])
    return dict(config=name, status='PASS' if report['passed'] else 'FAIL',
                seconds=round(time.time() - start), engine=report['engine'],
                unit=report['unit'],
                remove=round(report['worst_remove_ratio'], 4),
                replace=round(report['worst_replace_ratio'], 4),
                noise=round(report['noise']['std_ratio'], 4),
                sampling=round(report['sampling']['variance_ratio'], 3),
                reason='; '.join(report['failures']))


def markdown(rows: List[Dict]) -> str:
    passed = sum(r['status'] == 'PASS' for r in rows)
    lines = [f'{passed} of {len(rows)} configs pass.', '',
             '| config | result | engine | unit | removed (<= 1 C) | '
             'replaced (<= 2 C) | noise std / sigma C | batch-size variance '
             '/ binomial | time (s) |',
             '|---|---|---|---|---:|---:|---:|---:|---:|']
    for r in rows:
        if r['status'] == 'error':
            lines.append(f"| {r['config']} | **error**: {r['reason']} | | | "
                         f"| | | | {r['seconds']} |")
            continue
        result = r['status'] + (f": {r['reason']}" if r['reason'] else '')
        lines.append(f"| {r['config']} | {result} | {r['engine']} | "
                     f"{r['unit']} | {r['remove']:.4f} | {r['replace']:.4f} "
                     f"| {r['noise']:.4f} | {r['sampling']:.3f} | "
                     f"{r['seconds']} |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/sensitivity_sweep')
    parser.add_argument('--only', nargs='*', help='config name substrings')
    parser.add_argument('--steps', type=int, default=3)
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--project-only', action='store_true')
    which.add_argument('--stock-only', action='store_true')
    args = parser.parse_args(argv)
    from make_synthetic_mpii import make_synthetic_mpii
    from stock_config_coverage import stock_configs, write_config
    out = osp.abspath(args.out)
    data = osp.join(out, 'data')
    if not osp.exists(osp.join(data, 'annotations', 'mpii_gt_val.mat')):
        make_synthetic_mpii(data, 40, 4, seed=0, size=(256, 256),
                            people_per_image='2-3')
    configs = [] if args.stock_only else project_configs()
    if not args.project_only:
        os.makedirs(osp.join(out, 'stock'), exist_ok=True)
        for stock in stock_configs():
            path = osp.join(out, 'stock',
                            osp.splitext(osp.basename(stock))[0] + '.py')
            write_config(stock, data, path)
            configs.append(path)
    if args.only:
        configs = [c for c in configs if any(s in c for s in args.only)]
    record = osp.join(out, 'sensitivity.json')
    rows = json.load(open(record)) if osp.exists(record) else []
    done = {r['config'] for r in rows}
    for i, config in enumerate(configs):
        name = osp.splitext(osp.basename(config))[0]
        if name in done:
            continue
        row = run_one(config, data, out, args.steps)
        rows.append(row)
        with open(record, 'w') as f:
            json.dump(rows, f, indent=1)
        print(f"[{i + 1}/{len(configs)}] {name}: {row['status']} "
              f"({row['seconds']} s) {row.get('reason', '')}", flush=True)
    with open(osp.join(out, 'sensitivity.md'), 'w') as f:
        f.write(markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == '__main__':
    main()
