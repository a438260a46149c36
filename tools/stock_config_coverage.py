"""Train every stock MMPose top-down config privately with only the mixin.

For each of MMPose's MPII (``--dataset mpii``, 31 configs) or COCO
(``--dataset coco``: ``topdown_heatmap``, ``rtmpose``, ``simcc`` and
``topdown_regression``, 139 configs) top-down configs, writes::

    _base_ = ['mmpose::<config>', 'configs/_base_/dp_sgd.py']
    + data paths of a generated MPII- or COCO-format set, 1 epoch, batch 2
    + model.backbone.init_cfg = None (offline: no ImageNet download)

runs ``tools/train.py`` on it (DP-SGD through the mixin alone: BatchNorm
handled by privacy.batch_norm='auto', which picks GroupNorm without
pretrained weights) and ``tools/test.py`` on the checkpoint (PCKh, or COCO
AP with MMPose's CocoMetric on detector boxes), and writes the coverage
table (trained, or refused with the reason; engine, trainable parameters,
BatchNorm handling, epsilon and wall time per config) as markdown and JSON.
Resumable: a config already in ``coverage.json`` is not run again, so a
long sweep (COCO) can be finished over several sittings; ``--only``
selects configs by substring (a family). ``--retry killed`` reruns the
rows of that status (replacing them), and ``--privacy KEY=VALUE`` adds
privacy settings (e.g. ``max_physical_batch_size=1`` for a model whose
per-sample gradients do not fit at the sweep's batch); a row records the
settings it ran with.

Usage::

    python tools/stock_config_coverage.py --out work_dirs/coverage
    python tools/stock_config_coverage.py --dataset coco \
        --out work_dirs/coverage_coco [--only mspn rsn]
    python tools/stock_config_coverage.py --dataset coco \
        --out work_dirs/coverage_coco --only ViTPose-large --retry killed \
        --privacy max_physical_batch_size=1
"""
import argparse
import ast
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PATTERNS = {
    'mpii': ['body_2d_keypoint/*/mpii/*.py'],
    'coco': [f'body_2d_keypoint/{kind}/coco/*.py' for kind in
             ('topdown_heatmap', 'rtmpose', 'simcc', 'topdown_regression')],
}


def mmpose_config_dir() -> str:
    import mmpose
    return osp.join(osp.dirname(mmpose.__file__), '.mim', 'configs')


def stock_configs(dataset: str = 'mpii') -> List[str]:
    """The stock top-down configs of ``dataset``, relative to MMPose's
    config dir."""
    base = mmpose_config_dir()
    return sorted(osp.relpath(p, base) for pattern in PATTERNS[dataset]
                  for p in glob.glob(osp.join(base, pattern)))


#: Privacy settings added to every config of a sweep (``--privacy``).
PRIVACY_EXTRA: Dict = {}


def parse_privacy(items: List[str]) -> Dict:
    """``['max_physical_batch_size=1', ...]`` -> a dict of literals."""
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise SystemExit(f'--privacy takes KEY=VALUE, got {item!r}')
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _write(stock: str, data: str, path: str, datasets: str) -> None:
    """The stock config + the mixin, 1 epoch of batch 2, ``datasets`` (the
    dataloader lines of the data format)."""
    root = data.rstrip('/') + '/'
    privacy = dict(target_epsilon=8.0, max_grad_norm=1.0, **PRIVACY_EXTRA)
    text = f"""_base_ = ['mmpose::{stock}',
          '{ROOT}/configs/_base_/dp_sgd.py']
data_root = '{root}'
model = dict(backbone=dict(init_cfg=None))
privacy = {privacy!r}
{datasets}test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, save_best=None))
visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
"""
    with open(path, 'w') as f:
        f.write(text)


def write_config(stock: str, data: str, path: str) -> None:
    """A stock MPII config on a generated MPII set (make_synthetic_mpii)."""
    _write(stock, data, path, """\
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root,
                                   headbox_file=data_root +
                                   'annotations/mpii_gt_val.mat'))
""")


COCO_TRAIN = dict(ann_file='annotations/person_keypoints_train.json',
                  data_prefix=dict(img='images/'))


def _coco_only(stock: str, root: str) -> Optional[Dict]:
    """For a config training on COCO combined with other sets (RTMPose's
    and CSPNeXt's ``aic-coco``): its CombinedDataset with the COCO part
    alone (its keypoint converter kept: some predict 19 keypoints) on the
    generated set; None for a plain COCO config."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(mmpose_config_dir(), stock))
    dataset = cfg.train_dataloader.dataset.to_dict()
    if dataset['type'] == 'CocoDataset':
        return None
    parts = [part.get('dataset', part) for part in dataset['datasets']]
    coco = [part for part in parts if part['type'] == 'CocoDataset']
    if len(coco) != 1:
        raise ValueError(f'{stock}: no single COCO part in {parts}')
    coco[0].update(COCO_TRAIN, data_root=root)
    dataset['datasets'] = coco
    return dataset


def write_coco_config(stock: str, data: str, path: str) -> None:
    """A stock COCO config on a generated COCO set (make_synthetic_coco)."""
    root = data.rstrip('/') + '/'
    combined = _coco_only(stock, root)
    dataset = ("dict(data_root=data_root, **" + repr(COCO_TRAIN) + ")"
               if combined is None else
               "dict(_delete_=True, **" + repr(combined) + ")")
    _write(stock, data, path, f"""\
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset={dataset})
""" + """\
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(
    data_root=data_root, ann_file='annotations/person_keypoints_val.json',
    bbox_file=data_root + 'person_detection_results/val_detections.json',
    data_prefix=dict(img='images/')))
val_evaluator = dict(ann_file=data_root + 'annotations/'
                     'person_keypoints_val.json')
test_evaluator = val_evaluator
""")


#: Zoo models outside the MPII configs, trained on MPII data through their
#: own MMPose config and the mixin (name -> config under MMPose's configs).
EXTRA = {
    'vitpose-small (COCO config, MPII data)':
    'body_2d_keypoint/topdown_heatmap/coco/'
    'td-hm_ViTPose-small_8xb64-210e_coco-256x192.py',
}


def write_extra_config(stock: str, data: str, path: str) -> None:
    """A COCO config with MPII data: the dataset, 16 keypoints, PCKh."""
    from mmengine.config import Config
    write_config(stock, data, path)
    root = data.rstrip('/') + '/'
    # A CombinedDataset (COCO + AI Challenger) becomes the MPII set alone,
    # with the stock training pipeline.
    train = Config.fromfile(osp.join(mmpose_config_dir(), stock))
    combined = train.train_dataloader.dataset.get('type') != 'CocoDataset'
    replace = ("_delete_=True, pipeline={{_base_.train_pipeline}}, "
               if combined else '')
    with open(path, 'a') as f:
        f.write(f"""
model = dict(backbone=dict(init_cfg=None), head=dict(out_channels=16))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict({replace}
    type='MpiiDataset', data_root='{root}',
    ann_file='annotations/mpii_train.json', data_prefix=dict(img='images/')))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(
    type='MpiiDataset', data_root='{root}',
    ann_file='annotations/mpii_val.json', bbox_file=None,
    headbox_file='{root}annotations/mpii_gt_val.mat',
    data_prefix=dict(img='images/')))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='MpiiPCKhAccuracy')
test_evaluator = val_evaluator
""")


def _error(text: str) -> str:
    """The last error line of a failed run."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r'^[\w.]*(Error|Exception)\b', line):
            return line[:400]
    return lines[-1][:400] if lines else 'no output'


def _find(pattern: str, text: str, default=None):
    match = re.search(pattern, text)
    return match.group(1) if match else default


def run_one(stock: str, data: str, out: str, python: str,
            writer=write_config) -> Dict:
    name = osp.splitext(osp.basename(stock))[0]
    work = osp.join(out, name)
    os.makedirs(work, exist_ok=True)
    config = work + '.py'
    writer(stock, data, config)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE='1')
    start = time.time()
    proc = subprocess.run([python, 'tools/train.py', config, '--work-dir',
                           work], cwd=ROOT, text=True, capture_output=True,
                          env=env)
    log = proc.stdout + proc.stderr
    with open(osp.join(work, 'train_output.log'), 'w') as f:
        f.write(log)
    row = dict(config=stock, name=name, seconds=round(time.time() - start))
    if PRIVACY_EXTRA:
        row['privacy'] = dict(PRIVACY_EXTRA)
    if proc.returncode < 0:  # a signal: the OS killed it (memory, most often)
        return dict(row, status='killed', reason=(
            f'killed by signal {-proc.returncode} after {row["seconds"]} s '
            '(SIGKILL: out of memory on this machine, most likely)'))
    if proc.returncode != 0:
        return dict(row, status='refused', reason=_error(log))
    test = subprocess.run([python, 'tools/test.py', config,
                           osp.join(work, 'epoch_1.pth'), '--work-dir',
                           osp.join(work, 'test'), '--out',
                           osp.join(work, 'metrics.json')], cwd=ROOT,
                          text=True, capture_output=True, env=env)
    if test.returncode != 0:
        return dict(row, status='test failed',
                    reason=_error(test.stdout + test.stderr))
    return dict(row, **summary(work, log))


def summary(work: str, log: str) -> Dict:
    """What a successful run did, read from its log and metrics."""
    with open(osp.join(work, 'metrics.json')) as f:
        metrics = json.load(f)
    return dict(
        status='trained',
        steps=int(_find(r'after (\d+) steps at noise_multiplier', log, 0)),
        epsilon=float(_find(r'final: \(([\d.]+),', log, 'nan')),
        trainable=int(_find(r'(\d+) trainable parameters clipped', log, 0)),
        batch_norm=_find(r'\[privacy\] BatchNorm: (\d+ layers [^,(]+)', log,
                         'none'),
        patched=_find(r'(\d+) modules run a hook-safe forward', log, '0'),
        engine=_find(r'clipping engine auto: .*chose (\w+)', log,
                     _find(r"clipping engine '(\w+)'", log, '?')),
        pckh=metrics.get('PCK'), ap=metrics.get('coco/AP'))


def rerender(out: str) -> List[Dict]:
    """Rows of an earlier run read back from its work dirs and logs (for a
    run written by an older version of this table)."""
    with open(osp.join(out, 'coverage.json')) as f:
        rows = json.load(f)
    for row in rows:
        if row['status'] == 'trained':
            work = osp.join(out, osp.splitext(osp.basename(row['config']))[0])
            with open(osp.join(work, 'train_output.log')) as f:
                row.update(summary(work, f.read()))
    return rows


def markdown(rows: List[Dict], dataset: str = 'mpii') -> str:
    stock = [r for r in rows if not r.get('extra')]
    trained = sum(r['status'] == 'trained' for r in stock)
    metric = 'PCKh@0.5' if dataset == 'mpii' else 'AP'
    lines = [
        f'{trained} of {len(stock)} stock {dataset.upper()} top-down configs '
        'train privately with only the mixin.', '',
        '| config | result | steps | epsilon | engine | trainable params | '
        f'BatchNorm | hook-safe forwards | {metric} | time (s) |',
        '|---|---|---:|---:|---|---:|---|---:|---:|---:|'
    ]
    for r in rows:
        name = r['name'] + ''.join(f'; {k}={v!r}' for k, v in
                                   (r.get('privacy') or {}).items())
        if r['status'] == 'trained':
            value = r.get('pckh') if dataset == 'mpii' else r.get('ap')
            value = '' if value is None else f'{value:.3g}'
            lines.append(
                f"| {name} | trained, tested | {r['steps']} | "
                f"{r['epsilon']:.2f} | {r['engine']} | {r['trainable']:,} | "
                f"{r['batch_norm']} | {r['patched']} | {value} | "
                f"{r['seconds']} |")
        else:
            lines.append(f"| {name} | **{r['status']}**: "
                         f"{r['reason']} | | | | | | | | {r['seconds']} |")
    return '\n'.join(lines) + '\n'


def _data(dataset: str, out: str, num_train: int) -> str:
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    data = osp.join(out, 'data')
    if dataset == 'mpii':
        from make_synthetic_mpii import make_synthetic_mpii
        if not osp.exists(osp.join(data, 'annotations', 'mpii_gt_val.mat')):
            make_synthetic_mpii(data, num_train, 4, seed=0, size=(256, 256))
    else:
        from make_synthetic_coco import make_synthetic_coco
        if not osp.exists(osp.join(data, 'person_detection_results')):
            make_synthetic_coco(data, num_train, 4, seed=0, size=(192, 256))
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/stock_config_coverage')
    parser.add_argument('--dataset', choices=sorted(PATTERNS),
                        default='mpii')
    parser.add_argument('--configs', '--only', nargs='*',
                        help='substrings selecting configs (default: all)')
    parser.add_argument('--num-train', type=int, default=8)
    parser.add_argument('--extra', action='store_true',
                        help='also the zoo models of EXTRA (ViTPose-small; '
                        'MPII only)')
    parser.add_argument('--rerender', action='store_true',
                        help='rewrite the table of an earlier run from its '
                        'logs (with --extra: run only the extra models)')
    parser.add_argument('--retry', nargs='*', default=[],
                        metavar='STATUS',
                        help='rerun the recorded rows of these statuses '
                        '(e.g. killed), replacing them')
    parser.add_argument('--privacy', nargs='*', default=[],
                        metavar='KEY=VALUE',
                        help='privacy settings added to every config run '
                        '(e.g. max_physical_batch_size=1)')
    args = parser.parse_args(argv)
    PRIVACY_EXTRA.clear()
    PRIVACY_EXTRA.update(parse_privacy(args.privacy))
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = _data(args.dataset, out, args.num_train)
    writer = write_config if args.dataset == 'mpii' else write_coco_config
    configs = [c for c in stock_configs(args.dataset)
               if not args.configs or any(s in c for s in args.configs)]
    record = osp.join(out, 'coverage.json')
    rows = json.load(open(record)) if osp.exists(record) else []
    if args.rerender:
        rows, configs = [r for r in rerender(out) if not r.get('extra')], []
    done = {r['config'] for r in rows if r['status'] not in args.retry}
    for i, stock in enumerate(configs):
        if stock in done:
            continue
        row = run_one(stock, data, out, sys.executable, writer)
        rows = [r for r in rows if r['config'] != stock] + [row]
        with open(record, 'w') as f:
            json.dump(rows, f, indent=1)
        print(f"[{i + 1}/{len(configs)}] {row['name']}: {row['status']} "
              f"({row['seconds']} s) {row.get('reason', '')}", flush=True)
    if args.extra and args.dataset == 'mpii':
        for label, stock in EXTRA.items():
            if stock in done:
                continue
            row = run_one(stock, data, out, sys.executable,
                          write_extra_config)
            row.update(name=label, extra=True)
            rows.append(row)
            print(f"[extra] {label}: {row['status']} ({row['seconds']} s) "
                  f"{row.get('reason', '')}", flush=True)
    with open(record, 'w') as f:
        json.dump(rows, f, indent=1)
    with open(osp.join(out, 'coverage.md'), 'w') as f:
        f.write(markdown(rows, args.dataset))
    print(markdown(rows, args.dataset))
    return rows


if __name__ == '__main__':
    main()
