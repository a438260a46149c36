"""The paper's privacy-utility comparison at laptop scale, in one command.

Generates a private training set, a disjoint public set from a shifted
distribution and a validation set (tools/make_synthetic_mpii.py); pretrains
the tiny HRNet non-privately on the public set (the paper's "finetuning"
strategy) by two routes: with GroupNorm (``groupnorm``), and with stock
BatchNorm (``zoo``: a model-zoo checkpoint, whose BatchNorm the private
fine-tuning freezes); fine-tunes non-private, DP-SGD, PDP, FDP and hybrid
models from each checkpoint on the private set over an epsilon grid and
clipping norms (the zoo route at the smallest C); evaluates every model
with tools/test.py; and writes ``results.csv``, ``results.md`` and
``pckh_vs_epsilon.png``.

Every run is a ``tools/train.py`` + ``tools/test.py`` pair of processes.
Finished runs are skipped, so an interrupted study resumes where it stopped.

    python tools/privacy_utility_study.py --out work_dirs/study          # ~45 min
    python tools/privacy_utility_study.py --quick --out work_dirs/quick  # minutes
"""
import argparse
import csv
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'non-private': 'configs/synthetic/tiny_hrnet_synthetic.py',
    'public-features-only': 'configs/synthetic/tiny_hrnet_synthetic.py',
    'DP-SGD': 'configs/synthetic/dp_tiny_hrnet_synthetic.py',
    'PDP': 'configs/synthetic/pdp_tiny_hrnet_synthetic.py',
    'FDP': 'configs/synthetic/fdp_tiny_hrnet_synthetic.py',
    'Hybrid': 'configs/synthetic/hybrid_tiny_hrnet_synthetic.py',
}
DP_METHODS = ('DP-SGD', 'PDP', 'FDP', 'Hybrid')
#: Pretraining routes: the norm layers of the public model.
ROUTES = ('groupnorm', 'zoo')
ZOO_NORM = "model = dict(backbone=dict(norm_cfg=dict(_delete_=True, type='BN')))"
BLUR = dict(type='PublicFeatureBlur', kernel_size=7, sigma=2.5)

FULL = dict(num_private=1024, num_public=512, num_val=256, projection=64,
            pretrain_epochs=12, epochs=6, batch=64,
            epsilons=[0.5, 1.0, 2.0, 8.0], clip_norms=[0.01, 1.0],
            headline=(1.0, 0.01), zoo_epsilons=[0.5, 1.0, 2.0, 8.0])
QUICK = dict(num_private=128, num_public=64, num_val=32, projection=16,
             pretrain_epochs=2, epochs=1, batch=16,
             epsilons=[1.0, 8.0], clip_norms=[0.1], headline=(1.0, 0.1),
             zoo_epsilons=[8.0])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='work_dirs/privacy_utility_study')
    p.add_argument('--quick', action='store_true',
                   help='tiny grid and data (a few minutes; for tests)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--headline-seeds', type=int, nargs='*', default=[1],
                   help='extra seeds for the headline cells')
    return p.parse_args(argv)


def run(cmd: List[str], log: str) -> None:
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'failed ({proc.returncode}): {" ".join(cmd)}; '
                           f'see {log}')


def data_options(root: str, val_root: Optional[str] = None) -> List[str]:
    val_root = val_root or root
    return [f'train_dataloader.dataset.data_root={root}/',
            f'val_dataloader.dataset.data_root={val_root}/',
            f'val_dataloader.dataset.headbox_file={val_root}/annotations/'
            'mpii_gt_val.mat',
            f'test_dataloader.dataset.data_root={val_root}/',
            f'test_dataloader.dataset.headbox_file={val_root}/annotations/'
            'mpii_gt_val.mat']


class Study:

    def __init__(self, out: str, plan: Dict, seed: int, headline_seeds):
        self.out = osp.abspath(out)
        self.plan = plan
        self.seed = seed
        self.headline_seeds = headline_seeds
        self.py = sys.executable
        os.makedirs(self.out, exist_ok=True)

    # -- data and pretraining ---------------------------------------------
    def make_data(self) -> None:
        from make_synthetic_mpii import make_synthetic_mpii
        p, s = self.plan, self.seed
        if not osp.exists(osp.join(self.out, 'private', 'annotations',
                                   'mpii_gt_val.mat')):
            make_synthetic_mpii(osp.join(self.out, 'private'),
                                p['num_private'], p['num_val'], seed=s)
        public = osp.join(self.out, 'public')
        if not osp.exists(osp.join(public, 'annotations', 'mpii_proj.json')):
            make_synthetic_mpii(public, p['num_public'], 1, seed=s + 1000,
                                style='shifted')
            with open(osp.join(public, 'annotations',
                               'mpii_train.json')) as f:
                records = json.load(f)
            # The projection set of PDP/hybrid: m public records.
            with open(osp.join(public, 'annotations', 'mpii_proj.json'),
                      'w') as f:
                json.dump(records[:p['projection']], f)

    def pretrain(self, route: str = 'groupnorm') -> str:
        folder = 'pretrain' if route == 'groupnorm' else f'pretrain_{route}'
        ckpt = osp.join(self.out, folder, 'pretrained.pth')
        if osp.exists(ckpt):
            return ckpt
        work = osp.join(self.out, folder)
        os.makedirs(work, exist_ok=True)
        opts = data_options(osp.join(self.out, 'public'),
                            osp.join(self.out, 'private')) + [
            f"train_cfg.max_epochs={self.plan['pretrain_epochs']}",
            f"train_cfg.val_interval={self.plan['pretrain_epochs']}",
            'train_dataloader.batch_size=32', f'randomness.seed={self.seed}']
        config = (CONFIGS['non-private'] if route == 'groupnorm' else
                  'configs/synthetic/tiny_hrnet_bn_synthetic.py')
        run([self.py, 'tools/train.py', config,
             '--work-dir', work, '--cfg-options', *opts],
            osp.join(work, 'train.log'))
        last = osp.join(work, f"epoch_{self.plan['pretrain_epochs']}.pth")
        os.replace(last, ckpt)
        return ckpt

    # -- runs ----------------------------------------------------------------
    def runs(self) -> List[Dict]:
        p = self.plan
        runs = [dict(method='non-private', epsilon=None, C=None,
                     seed=self.seed, route='groupnorm'),
                dict(method='public-features-only', epsilon=None, C=None,
                     seed=self.seed, route='groupnorm')]
        for c in p['clip_norms']:
            for eps in p['epsilons']:
                for m in DP_METHODS:
                    runs.append(dict(method=m, epsilon=eps, C=c,
                                     seed=self.seed, route='groupnorm'))
        head_eps, head_c = p['headline']
        for s in self.headline_seeds:
            for m in DP_METHODS:
                runs.append(dict(method=m, epsilon=head_eps, C=head_c,
                                 seed=s, route='groupnorm'))
        # The model-zoo route: BatchNorm pretraining, BN frozen when private.
        runs.append(dict(method='non-private', epsilon=None, C=None,
                         seed=self.seed, route='zoo'))
        for eps in p['zoo_epsilons']:
            for m in DP_METHODS:
                runs.append(dict(method=m, epsilon=eps,
                                 C=min(p['clip_norms']), seed=self.seed,
                                 route='zoo'))
        return runs

    @staticmethod
    def name(r: Dict) -> str:
        tag = r['method'].lower().replace(' ', '_')
        if r['epsilon'] is not None:
            tag += f"_eps{r['epsilon']:g}_C{r['C']:g}"
        route = '' if r.get('route', 'groupnorm') == 'groupnorm' else \
            f"_{r['route']}"
        return f"{tag}_seed{r['seed']}{route}"

    def config(self, r: Dict, pretrained: str) -> str:
        """The run's config file: the method's tiny config plus overrides."""
        p = self.plan
        private = osp.join(self.out, 'private')
        public = osp.join(self.out, 'public')
        lines = [
            f"_base_ = ['{osp.join(ROOT, CONFIGS[r['method']])}']",
            f"data_root = '{private}/'",
            f"load_from = '{pretrained}'",
            f"randomness = dict(seed={r['seed']})",
            f"train_cfg = dict(max_epochs={p['epochs']}, "
            f"val_interval={p['epochs']})",
            'optim_wrapper = dict(optimizer=dict(lr=1e-3))',
            f"default_hooks = dict(checkpoint=dict(interval={p['epochs']}))",
            "val_dataloader = dict(dataset=dict(data_root=data_root, "
            "headbox_file=data_root + 'annotations/mpii_gt_val.mat'))",
            'test_dataloader = val_dataloader',
        ]
        if r.get('route') == 'zoo':
            lines.append(ZOO_NORM)
        dataset = ["data_root=data_root"]
        if r['method'] == 'public-features-only':
            # The tiny training pipeline with the blur after the crop: the
            # model sees public features only (sharp images at test time).
            dataset.append(
                "pipeline=[dict(type='LoadImage'), "
                "dict(type='GetBBoxCenterScale'), "
                "dict(type='RandomFlip', direction='horizontal'), "
                "dict(type='RandomBBoxTransform', shift_prob=0), "
                "dict(type='TopdownAffine', input_size={{_base_.input_size}}), "
                f"{BLUR!r}, dict(type='GenerateTarget', "
                "encoder={{_base_.codec}}), "
                "dict(type='PackPoseInputs')]")
        lines.append(f"train_dataloader = dict(batch_size={p['batch']}, "
                     f"dataset=dict({', '.join(dataset)}))")
        if r['epsilon'] is not None:
            # Fixed seeds make the study repeatable; a real run keeps the
            # sampling and noise seeds secret (the default).
            privacy = [f"target_epsilon={r['epsilon']}",
                       f"max_grad_norm={r['C']}",
                       f"noise_seed={r['seed']}", f"sampler_seed={r['seed']}"]
            if r['method'] in ('FDP', 'Hybrid'):
                privacy.append(f"public_features=dict(seed={r['seed']})")
            if r['method'] in ('PDP', 'Hybrid'):
                privacy += [
                    "public_data=dict(_delete_=True, dataset=dict("
                    f"type='MpiiDataset', data_root='{public}/', "
                    "data_mode='topdown', ann_file='annotations/"
                    "mpii_proj.json', data_prefix=dict(img='images/'), "
                    "pipeline={{_base_.train_pipeline}}))",
                    f"projection=dict(rank={p['projection']})"]
            lines.append(f"privacy = dict({', '.join(privacy)})")
        return '\n'.join(lines) + '\n'

    def execute(self, r: Dict, pretrained: Dict[str, str]) -> Dict:
        pretrained = pretrained[r.get('route', 'groupnorm')]
        work = osp.join(self.out, 'runs', self.name(r))
        metrics_file = osp.join(work, 'metrics.json')
        if not osp.exists(metrics_file):
            os.makedirs(work, exist_ok=True)
            # Outside the work dir: the Runner dumps its config there.
            config = work + '.py'
            with open(config, 'w') as f:
                f.write(self.config(r, pretrained))
            run([self.py, 'tools/train.py', config, '--work-dir', work],
                osp.join(work, 'train.log'))
            ckpt = osp.join(work, f"epoch_{self.plan['epochs']}.pth")
            run([self.py, 'tools/test.py', config, ckpt, '--work-dir',
                 osp.join(work, 'test'), '--out', metrics_file],
                osp.join(work, 'test.log'))
            self.record_privacy(ckpt, work)
        with open(metrics_file) as f:
            metrics = json.load(f)
        privacy = {}
        if osp.exists(osp.join(work, 'privacy.json')):
            with open(osp.join(work, 'privacy.json')) as f:
                privacy = json.load(f)
        return dict(r, pckh=metrics['PCK'], pckh01=metrics['PCK@0.1'],
                    spent_epsilon=privacy.get('epsilon'),
                    sigma=privacy.get('noise_multiplier'),
                    steps=privacy.get('steps'))

    def record_privacy(self, ckpt: str, work: str) -> None:
        from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
        from mmpose_dp.privacy import PrivacyLedger
        state = load_checkpoint_file(ckpt, 'cpu').get('privacy_ledger')
        if state is None:
            return
        ledger = PrivacyLedger.from_state_dict(state)
        seg = ledger.segments[-1]
        with open(osp.join(work, 'privacy.json'), 'w') as f:
            json.dump(dict(epsilon=ledger.epsilon(), delta=ledger.delta,
                           noise_multiplier=seg.noise_multiplier,
                           sample_rate=seg.sample_rate,
                           steps=ledger.steps,
                           mechanism=ledger.mechanism.config(),
                           accounted=[list(s) for s in ledger.accounted()]),
                      f)

    # -- the whole study -----------------------------------------------------
    def __call__(self) -> List[Dict]:
        start = time.time()
        self.make_data()
        print('[study] data ready; pretraining on the public set', flush=True)
        pretrained = {route: self.pretrain(route) for route in ROUTES}
        runs = self.runs()
        results = []
        for i, r in enumerate(runs):
            t0 = time.time()
            done_before = osp.exists(osp.join(self.out, 'runs', self.name(r),
                                              'metrics.json'))
            results.append(self.execute(r, pretrained))
            elapsed = time.time() - start
            left = elapsed / (i + 1) * (len(runs) - i - 1)
            print(f"[study] {i + 1}/{len(runs)} {self.name(r)}: PCKh "
                  f"{results[-1]['pckh']:.1f}"
                  f"{' (cached)' if done_before else ''} in "
                  f"{time.time() - t0:.0f}s; elapsed {elapsed / 60:.1f} min,"
                  f' about {left / 60:.1f} min left', flush=True)
        write_results(self.out, results, self.plan, time.time() - start)
        return results


def write_csv(path: str, results: List[Dict], first: str) -> None:
    """One row per run: ``first`` (route or variant), then its cell and
    what it measured and spent."""
    keys = [first, 'method', 'epsilon', 'C', 'seed', 'pckh', 'pckh01',
            'spent_epsilon', 'sigma', 'steps']
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in results:
            w.writerow({k: r.get(k) for k in keys})


def write_results(out: str, results: List[Dict], plan: Dict,
                  seconds: float) -> None:
    write_csv(osp.join(out, 'results.csv'), results, 'route')
    zoo = [r for r in results if r.get('route') == 'zoo']
    results = [r for r in results if r.get('route', 'groupnorm') ==
               'groupnorm']
    base = {r['method']: r['pckh'] for r in results if r['epsilon'] is None}
    lines = [f'Plan: {json.dumps(plan)}; wall time {seconds / 60:.1f} min.',
             '', f"Non-private: {base.get('non-private', float('nan')):.2f}; "
             'public features only: '
             f"{base.get('public-features-only', float('nan')):.2f} "
             '(PCKh@0.5 mean, %).', '']
    for c in plan['clip_norms']:
        lines += [f'C = {c:g} (PCKh@0.5 %, seed {results[0]["seed"]}; '
                  'sigma per epsilon in results.csv)', '',
                  '| epsilon | ' + ' | '.join(DP_METHODS) + ' |',
                  '|---|' + '---:|' * len(DP_METHODS)]
        for eps in plan['epsilons']:
            cells = []
            for m in DP_METHODS:
                vals = [r['pckh'] for r in results if r['method'] == m
                        and r['epsilon'] == eps and r['C'] == c]
                if len(vals) > 1:
                    mean = sum(vals) / len(vals)
                    spread = max(vals) - min(vals)
                    cells.append(f'{mean:.1f} (+-{spread / 2:.1f}, '
                                 f'{len(vals)} seeds)')
                else:
                    cells.append(f'{vals[0]:.1f}' if vals else '')
            lines.append(f'| {eps:g} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    if zoo:
        c = min(plan['clip_norms'])
        zoo_base = next((r['pckh'] for r in zoo if r['epsilon'] is None),
                        float('nan'))
        lines += [f'Model-zoo route (stock BatchNorm pretraining; private '
                  f'fine-tuning with BatchNorm frozen), C = {c:g}; '
                  f'non-private fine-tuning (BatchNorm trained): '
                  f'{zoo_base:.2f}', '',
                  '| epsilon | ' + ' | '.join(DP_METHODS) + ' |',
                  '|---|' + '---:|' * len(DP_METHODS)]
        for eps in plan['zoo_epsilons']:
            cells = [next((f"{r['pckh']:.1f}" for r in zoo
                           if r['method'] == m and r['epsilon'] == eps), '')
                     for m in DP_METHODS]
            lines.append(f'| {eps:g} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines))
    plot(out, results, plan, base)


def plot(out: str, results: List[Dict], plan: Dict, base: Dict) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    clips = plan['clip_norms']
    fig, axes = plt.subplots(1, len(clips), figsize=(5 * len(clips), 4),
                             squeeze=False)
    for ax, c in zip(axes[0], clips):
        for m in DP_METHODS:
            pts = {}
            for r in results:
                if r['method'] == m and r['C'] == c:
                    pts.setdefault(r['epsilon'], []).append(r['pckh'])
            eps = sorted(pts)
            ax.plot(eps, [sum(pts[e]) / len(pts[e]) for e in eps], 'o-',
                    label=m)
        for name, style in (('non-private', 'k--'),
                            ('public-features-only', 'c--')):
            if name in base:
                ax.axhline(base[name], linestyle='--',
                           color=style[0], label=name)
        ax.set_xscale('log')
        ax.set_xticks(plan['epsilons'])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel('epsilon')
        ax.set_ylabel('PCKh@0.5 (%)')
        ax.set_title(f'C = {c:g}')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(osp.join(out, 'pckh_vs_epsilon.png'), dpi=120)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    plan = QUICK if args.quick else FULL
    seeds = [] if args.quick else args.headline_seeds
    return Study(args.out, plan, args.seed, seeds)()


if __name__ == '__main__':
    main()
