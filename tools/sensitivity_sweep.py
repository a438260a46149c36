"""Run the neighbouring-dataset check on every DP config of this project and
on the model families of MMPose's stock top-down configs (MPII and COCO).

Each config runs through ``mmpose_dp.engine.sensitivity_check`` on a
generated MPII-format set (256x256 images, 2-3 people per image; a COCO
config on a generated COCO set, 192x256, 2-3 people per image) with an
expected batch of 4: this project's configs in ``configs/`` and
``configs/synthetic/`` as they are (full size; PDP's public set shrunk to
24 records and rank 8, ``load_from`` dropped: the check needs no
pretrained weights); each stock family (``tools/tiny_families.py``: the
stock config's model with channels and depth shrunk, 64x64 crops, the
stock BatchNorm converted by the mixin) through the stock config and the
mixin as ``tools/stock_config_coverage.py`` writes it; ``--full-stock``
runs the 31 stock configs at full size instead (hours on 2 cores).
Resumable: a config already in ``sensitivity.json`` is skipped. Writes
``sensitivity.json`` and ``sensitivity.md`` (the table of
``docs/reports/sensitivity_check.md``).

Usage::

    python tools/sensitivity_sweep.py --out work_dirs/sensitivity_sweep \
        [--only PATTERN ...] [--project-only | --families-only] \
        [--full-stock] [--steps 2]
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
    """Every config of this project with a ``privacy`` section."""
    paths = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')) +
                   glob.glob(osp.join(ROOT, 'configs', 'synthetic', '*.py')))
    from mmengine.config import Config
    return [p for p in paths if 'privacy' in open(p).read()
            and 'privacy' in Config.fromfile(p)]


def family_config(family: str, data: str, folder: str):
    """The stock config of ``family`` with the mixin, its model shrunk and
    its crops at the family's small input size."""
    from mmengine.config import Config
    from stock_config_coverage import write_config, write_extra_config
    from tiny_families import FAMILIES, tiny_model_config
    spec = FAMILIES[family]
    path = osp.join(folder, f'family_{family}.py')
    writer = write_extra_config if 'coco' in spec.config else write_config
    writer('body_2d_keypoint/' + spec.config, data, path)
    cfg = Config.fromfile(path)
    model, codec = tiny_model_config(family)
    cfg.model = model
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'TopdownAffine':
            step['input_size'] = spec.input_size
        if step['type'] == 'GenerateTarget':
            step['encoder'] = codec
    return cfg


def _data_options(data: str, coco: bool = False) -> Dict:
    root = data.rstrip('/') + '/'
    options = {'train_dataloader.dataset.data_root': root,
               'train_dataloader.num_workers': 0,
               'train_dataloader.persistent_workers': False}
    if coco:  # the layout of tools/make_synthetic_coco.py
        options.update({
            'train_dataloader.dataset.ann_file':
            'annotations/person_keypoints_train.json',
            'train_dataloader.dataset.data_prefix': dict(img='images/')})
    return options


def is_coco(cfg) -> bool:
    return cfg.train_dataloader.dataset.get('type') == 'CocoDataset'


def coco_data(out: str) -> str:
    """A generated COCO set (40 images, 2-3 people each) for COCO configs."""
    from make_synthetic_coco import make_synthetic_coco
    data = osp.join(out, 'data_coco')
    if not osp.exists(osp.join(data, 'person_detection_results')):
        make_synthetic_coco(data, 40, 4, seed=0, size=(192, 256),
                            people_per_image='2-3')
    return data


def run_one(name: str, cfg, data: str, out: str, steps: int) -> Dict:
    from mmpose_dp.engine.sensitivity_check import check_sensitivity
    options = dict(OPTIONS, **_data_options(data, is_coco(cfg)))
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
                seconds=round(time.time() - start), steps=report['steps'],
                engine=report['engine'],
                unit=report['unit'],
                remove=round(report['worst_remove_ratio'], 4),
                replace=round(report['worst_replace_ratio'], 4),
                noise=round(report['noise']['std_ratio'], 4),
                sampling=round(report['sampling']['variance_ratio'], 3),
                reason='; '.join(report['failures']))


def markdown(rows: List[Dict]) -> str:
    passed = sum(r['status'] == 'PASS' for r in rows)
    lines = [f'{passed} of {len(rows)} configs pass.', '',
             '| config | result | engine | unit | steps | removed (<= 1 C) | '
             'replaced (<= 2 C) | noise std / sigma C | batch-size variance '
             '/ binomial | time (s) |',
             '|---|---|---|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        if r['status'] == 'error':
            lines.append(f"| {r['config']} | **error**: {r['reason']} | | | "
                         f"| | | | | {r['seconds']} |")
            continue
        result = r['status'] + (f": {r['reason']}" if r['reason'] else '')
        lines.append(f"| {r['config']} | {result} | {r['engine']} | "
                     f"{r['unit']} | {r.get('steps', 3)} | {r['remove']:.4f} "
                     f"| {r['replace']:.4f} | {r['noise']:.4f} | "
                     f"{r['sampling']:.3f} | {r['seconds']} |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/sensitivity_sweep')
    parser.add_argument('--only', nargs='*', help='config name substrings')
    parser.add_argument('--steps', type=int, default=2)
    parser.add_argument('--full-stock', action='store_true',
                        help='the 31 stock configs at full size instead of '
                        'the tiny families')
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--project-only', action='store_true')
    which.add_argument('--families-only', action='store_true')
    args = parser.parse_args(argv)
    from mmengine.config import Config
    from make_synthetic_mpii import make_synthetic_mpii
    from stock_config_coverage import stock_configs, write_config
    from tiny_families import FAMILIES
    out = osp.abspath(args.out)
    data = osp.join(out, 'data')
    if not osp.exists(osp.join(data, 'annotations', 'mpii_gt_val.mat')):
        make_synthetic_mpii(data, 40, 4, seed=0, size=(256, 256),
                            people_per_image='2-3')
    folder = osp.join(out, 'configs')
    os.makedirs(folder, exist_ok=True)
    # name -> a function building its config (built only when it runs)
    configs = {}
    if not args.families_only:
        for path in project_configs():
            configs[osp.splitext(osp.basename(path))[0]] = (
                lambda path=path: Config.fromfile(path))
    if not args.project_only and args.full_stock:
        for stock in stock_configs():
            name = osp.splitext(osp.basename(stock))[0]
            path = osp.join(folder, name + '.py')

            def build(stock=stock, path=path):
                write_config(stock, data, path)
                return Config.fromfile(path)
            configs[name] = build
    elif not args.project_only:
        for family in FAMILIES:
            if osp.isabs(FAMILIES[family].config):
                continue  # this project's TinyViT: among the configs above
            configs[f'family: {family}'] = (
                lambda family=family: family_config(family, data, folder))
    if args.only:
        configs = {n: c for n, c in configs.items()
                   if any(s in n for s in args.only)}
    record = osp.join(out, 'sensitivity.json')
    rows = json.load(open(record)) if osp.exists(record) else []
    done = {r['config'] for r in rows}
    for i, (name, build) in enumerate(configs.items()):
        if name in done:
            continue
        cfg = build()
        row = run_one(name.replace('family: ', 'family_'), cfg,
                      coco_data(out) if is_coco(cfg) else data, out,
                      args.steps)
        row['config'] = name
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
