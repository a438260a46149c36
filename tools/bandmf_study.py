"""Does banded matrix-factorization noise help at this scale? BandMF next to
DP-SGD in the privacy-utility study.

Reuses the study's data, public pretraining and run machinery
(tools/privacy_utility_study.py): for each route (GroupNorm, model zoo) and
each epsilon of 1, 2 and 8, fine-tunes DP-SGD and BandMF with b = 2, 4, 8
bands (``privacy.mechanism = dict(type='banded_mf', bands=b)``, cyclic
Poisson sampling over b secret groups) at the study's headline clipping
norm, same seeds, same steps, same expected batch; writes
``bandmf_study.csv`` and ``bandmf_study.md``.

    python tools/bandmf_study.py --out work_dirs/privacy_utility_study
"""
import argparse
import json
import os.path as osp
import sys
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from privacy_utility_study import (FULL, QUICK, ROUTES, Study,  # noqa: E402
                                   write_csv)

BANDS = (1, 2, 4, 8)  # 1: DP-SGD (the study's cell)
EPSILONS = (1.0, 2.0, 8.0)


class BandedStudy(Study):
    """The study's machinery with DP-SGD and BandMF runs."""

    def __init__(self, out, plan, seed: int, bands=BANDS, epsilons=EPSILONS,
                 routes=ROUTES):
        super().__init__(out, plan, seed, [])
        self.bands, self.epsilons, self.routes = bands, epsilons, routes

    def runs(self) -> List[Dict]:
        c = self.plan['headline'][1]
        return [dict(method='DP-SGD', epsilon=eps, C=c, seed=self.seed,
                     route=route, bands=b)
                for route in self.routes for eps in self.epsilons
                for b in self.bands]

    @staticmethod
    def name(r: Dict) -> str:
        # b = 1 is the study's own DP-SGD run: the same name reuses it.
        name = Study.name(r)
        return name if r['bands'] == 1 else f"bandmf{r['bands']}_{name}"

    def config(self, r: Dict, pretrained: str) -> str:
        text = super().config(r, pretrained)
        if r['bands'] > 1:
            text += ("privacy['mechanism'] = dict(type='banded_mf', "
                     f"bands={r['bands']})\n")
        return text

    def execute(self, r: Dict, pretrained: Dict[str, str]) -> Dict:
        result = super().execute(r, pretrained)
        with open(osp.join(self.out, 'runs', self.name(r),
                           'privacy.json')) as f:
            accounted = json.load(f)['accounted']
        # What the accountant composed: (sigma, rate, rounds).
        return dict(result, accounted_rate=accounted[0][1],
                    accounted_rounds=accounted[0][2])

    def __call__(self) -> List[Dict]:
        start = time.time()
        self.make_data()
        pretrained = {route: self.pretrain(route) for route in self.routes}
        results, runs = [], self.runs()
        for i, r in enumerate(runs):
            results.append(self.execute(r, pretrained))
            print(f"[bandmf] {i + 1}/{len(runs)} {self.name(r)}: PCKh "
                  f"{results[-1]['pckh']:.1f}, sigma "
                  f"{results[-1]['sigma']:.3f}; elapsed "
                  f'{(time.time() - start) / 60:.1f} min', flush=True)
        write(self.out, results, time.time() - start, self.seed)
        return results


def write(out: str, results: List[Dict], seconds: float, seed: int) -> str:
    for r in results:
        r['mechanism'] = ('gaussian' if r['bands'] == 1 else
                          f"banded_mf b={r['bands']}")
    write_csv(osp.join(out, 'bandmf_study.csv'), results, 'mechanism')
    bands = sorted({r['bands'] for r in results})
    heads = ['DP-SGD' if b == 1 else f'BandMF b={b}' for b in bands]
    lines = [f'Seed {seed}; wall time {seconds / 60:.1f} min. PCKh@0.5 '
             '(%), sigma in brackets.', '']
    for b in bands:
        r = next(r for r in results if r['bands'] == b)
        lines.append(f"- {'DP-SGD' if b == 1 else f'BandMF b={b}'}: "
                     f"{r['steps']} steps, accounted as "
                     f"{r['accounted_rounds']} rounds at sample rate "
                     f"{r['accounted_rate']:g}")
    lines.append('')
    for route in dict.fromkeys(r['route'] for r in results):
        lines += [f'Route: {route}', '',
                  '| epsilon | ' + ' | '.join(heads) + ' |',
                  '|---|' + '---:|' * len(heads)]
        for eps in sorted({r['epsilon'] for r in results}):
            cells = [next((f"{r['pckh']:.1f} ({r['sigma']:.2f})"
                           for r in results if r['route'] == route and
                           r['epsilon'] == eps and r['bands'] == b), '')
                     for b in bands]
            lines.append(f'| {eps:g} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    text = '\n'.join(lines)
    with open(osp.join(out, 'bandmf_study.md'), 'w') as f:
        f.write(text)
    print(text)
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='work_dirs/privacy_utility_study')
    p.add_argument('--quick', action='store_true',
                   help="the study's tiny plan (minutes; for tests)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--bands', type=int, nargs='+', default=list(BANDS))
    p.add_argument('--epsilons', type=float, nargs='+',
                   default=list(EPSILONS))
    p.add_argument('--routes', nargs='+', default=list(ROUTES),
                   choices=ROUTES)
    args = p.parse_args(argv)
    return BandedStudy(args.out, QUICK if args.quick else FULL, args.seed,
                       args.bands, args.epsilons, args.routes)()


if __name__ == '__main__':
    main()
