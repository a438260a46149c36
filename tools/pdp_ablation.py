"""Why projected DP-SGD loses in the study: one factor at a time.

Starts from the study's PDP cell (epsilon 1, C = 0.01, the GroupNorm route,
tools/privacy_utility_study.py) and changes one factor at a time, 2 seeds
each, with DP-SGD beside it:

* the basis: per-sample public gradients (ours) or mini-batch means of the
  public set (the paper's released code: 4 gradients);
* the rank k of the projection: 4, 16, 64 (= m);
* the public set: shifted distribution (the study's) or in-distribution
  (whole images carved out of the private training set);
* the refresh interval: 50 steps (2 refreshes in 96 steps) or 10;
* the optimizer: AdamW or SGD with momentum (for PDP and DP-SGD);
* then the factors that help, together.

It reuses the study's data and public pretraining (the same ``--out`` as
the study, or a fresh one), runs each model through tools/train.py and
tools/test.py, and writes ``pdp_ablation.csv`` and ``pdp_ablation.md``.

    python tools/pdp_ablation.py --out work_dirs/privacy_utility_study
"""
import argparse
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from privacy_utility_study import (FULL, QUICK, Study,  # noqa: E402
                                   write_csv)

#: name -> (method, description, extra config lines)
VARIANTS = {
    'pdp': ('PDP', 'per-sample basis, k = 64, shifted public set, '
            'refresh every 50 steps, AdamW (the study cell)', []),
    'pdp_batch_mean_basis': (
        'PDP', 'basis of 4 mini-batch-mean public gradients (k = 4)',
        ["privacy['projection'].update(basis='batch_mean', "
         "basis_batch_size=16, rank=4)"]),
    'pdp_rank4': ('PDP', 'per-sample basis, k = 4',
                  ["privacy['projection'].update(rank=4)"]),
    'pdp_rank16': ('PDP', 'per-sample basis, k = 16',
                   ["privacy['projection'].update(rank=16)"]),
    'pdp_in_distribution': (
        'PDP', 'public set: 64 records (whole images) carved out of the '
        'private training set',
        ["privacy['public_data'] = dict(_delete_=True, num_samples=64, "
         "seed=0)"]),
    'pdp_refresh10': ('PDP', 'refresh every 10 steps',
                      ["privacy['projection'].update(interval=10)"]),
    'pdp_sgd': ('PDP', 'SGD (lr 0.1, momentum 0.9) instead of AdamW',
                ["optim_wrapper = dict(optimizer=dict(_delete_=True, "
                 "type='SGD', lr=0.1, momentum=0.9))"]),
    'pdp_combined': (
        'PDP', 'the three factors that help, together: in-distribution '
        'public set, refresh every 10 steps, SGD',
        ["privacy['public_data'] = dict(_delete_=True, num_samples=64, "
         "seed=0)",
         "privacy['projection'].update(interval=10)",
         "optim_wrapper = dict(optimizer=dict(_delete_=True, "
         "type='SGD', lr=0.1, momentum=0.9))"]),
    'dpsgd': ('DP-SGD', 'DP-SGD, AdamW (the study cell)', []),
    'dpsgd_sgd': ('DP-SGD', 'DP-SGD, SGD (lr 0.1, momentum 0.9)',
                  ["optim_wrapper = dict(optimizer=dict(_delete_=True, "
                   "type='SGD', lr=0.1, momentum=0.9))"]),
}


class Ablation(Study):
    """The study's machinery with the ablation's runs."""

    def __init__(self, out, plan, seeds: List[int]):
        super().__init__(out, plan, seeds[0], [])
        self.seeds = seeds

    def runs(self) -> List[Dict]:
        eps, c = self.plan['headline']
        return [dict(method=method, epsilon=eps, C=c, seed=s,
                     route='groupnorm', variant=name)
                for name, (method, _, _) in VARIANTS.items()
                for s in self.seeds]

    @staticmethod
    def name(r: Dict) -> str:
        return f"ablation_{r['variant']}_seed{r['seed']}"

    def config(self, r: Dict, pretrained: str) -> str:
        text = super().config(r, pretrained)
        return text + '\n'.join(VARIANTS[r['variant']][2]) + '\n'

    def __call__(self) -> List[Dict]:
        start = time.time()
        self.make_data()
        pretrained = dict(groupnorm=self.pretrain('groupnorm'))
        results = []
        runs = self.runs()
        for i, r in enumerate(runs):
            results.append(self.execute(r, pretrained))
            print(f"[ablation] {i + 1}/{len(runs)} {self.name(r)}: PCKh "
                  f"{results[-1]['pckh']:.1f}; elapsed "
                  f'{(time.time() - start) / 60:.1f} min', flush=True)
        write(self.out, results, time.time() - start, self.seeds)
        return results


def write(out: str, results: List[Dict], seconds: float,
          seeds: List[int]) -> None:
    write_csv(osp.join(out, 'pdp_ablation.csv'), results, 'variant')
    lines = [f'Seeds {seeds}; wall time {seconds / 60:.1f} min.', '',
             '| variant | what changes | PCKh@0.5 per seed | mean | '
             'vs the study cell |', '|---|---|---|---:|---:|']
    means = {}
    for name, (_, description, _) in VARIANTS.items():
        values = [r['pckh'] for r in results if r['variant'] == name]
        means[name] = statistics.mean(values)
    for name, (_, description, _) in VARIANTS.items():
        values = [r['pckh'] for r in results if r['variant'] == name]
        delta = means[name] - means['pdp']
        lines.append(f"| {name} | {description} | "
                     f"{' / '.join(f'{v:.1f}' for v in values)} | "
                     f"{means[name]:.1f} | {delta:+.1f} |")
    with open(osp.join(out, 'pdp_ablation.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='work_dirs/privacy_utility_study')
    p.add_argument('--quick', action='store_true')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    args = p.parse_args(argv)
    return Ablation(args.out, QUICK if args.quick else FULL, args.seeds)()


if __name__ == '__main__':
    main()
