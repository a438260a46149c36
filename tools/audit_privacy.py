"""Audit a private training run: an epsilon lower bound from one run.

Trains CONFIG through the real training path (DPRunner, DPOptimWrapper with
the config's clipping engine, noise, reduction over processes and stages)
with M gradient canaries (``mmpose_dp.privacy.canaries``): each is included
with probability 1/2, then Poisson-sampled at every step at the run's q and
clipped to C like a record. A white-box auditor scores each canary on the
released noisy sums, guesses included / excluded for the most confident
ones and turns the correct guesses into an epsilon lower bound at the given
confidence (Steinke, Nasr, Jagielski, NeurIPS 2023; with delta; corrected
for choosing the best of several guess counts; the bound has power only
where 2 m delta is small, so audit with a small privacy.delta). The bound
must stay below
the epsilon that the ledger claims; ``--self-check`` repeats the audit on
deliberately broken mechanisms (no noise and noise divided by the number of
processes, both in the production noise step; canaries that skip clipping,
a simulated failure: canaries are added after the engine's clipping, so the
audit cannot see whether production clipping, sampling or unit grouping
work; ``tools/check_sensitivity.py --self-check`` breaks those) and reports
whether each is caught (its lower bound above the claim).

Usage::

    python tools/audit_privacy.py configs/synthetic/dp_tiny_hrnet_synthetic.py \\
        --canaries 1000 --out work_dirs/audit [--self-check] [--json] \\
        [--cfg-options train_cfg.max_epochs=8 ...]
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

from mmengine.config import Config, DictAction
from mmengine.hooks import Hook

from mmpose_dp.engine import find_session
from mmpose_dp.privacy.auditing import audit_from_scores
from mmpose_dp.privacy.canaries import GradientCanaries

#: Broken mechanisms of the self-check; each must be caught.
BROKEN = ('no-noise', 'noise-divided-by-processes', 'canaries-unclipped')
#: The number of processes the noise is wrongly divided by.
PROCESSES = 16


class CanaryHook(Hook):
    """Puts the canaries (and, for the self-check, a broken mechanism) into
    the optim wrapper once PrivacyHook has configured it."""

    priority = 'LOW'

    def __init__(self, num_canaries: int, seed: int, mechanism: str):
        self.num_canaries = num_canaries
        self.seed = seed
        self.mechanism = mechanism
        self.canaries: Optional[GradientCanaries] = None

    def before_train(self, runner) -> None:
        ow = runner.optim_wrapper
        self.canaries = GradientCanaries(
            ow.params, self.num_canaries, ow.sample_rate, ow.max_grad_norm,
            self.seed, clip=self.mechanism != 'canaries-unclipped')
        # Canaries join the clipped sum before the noise and are scored on
        # what the step releases (one process: the audit runs alone).
        ow.pre_noise_contributors.append(self.canaries.add)
        ow.release_observers.append(
            lambda release: self.canaries.observe(release.released))
        add_noise = ow.add_noise
        if self.mechanism == 'no-noise':
            ow.add_noise = lambda summed: None
        elif self.mechanism == 'noise-divided-by-processes':
            def divided(summed):
                sigma = ow.noise_multiplier
                ow.noise_multiplier = sigma / PROCESSES
                try:
                    add_noise(summed)
                finally:
                    ow.noise_multiplier = sigma
            ow.add_noise = divided


def run_audit(config: str, num_canaries: int, work_dir: str,
              mechanism: str = 'correct', seed: int = 0,
              confidence: float = 0.95,
              options: Optional[Dict] = None) -> Dict:
    """Train ``config`` with canaries under ``mechanism``; the audit."""
    from mmengine.registry import RUNNERS
    cfg = Config.fromfile(config)
    if options:
        cfg.merge_from_dict(copy.deepcopy(options))
    cfg.work_dir = work_dir
    cfg.visualizer = dict(type='PoseLocalVisualizer',
                          vis_backends=[dict(type='LocalVisBackend')],
                          name=f'audit_{mechanism}')
    runner = RUNNERS.build(cfg)
    hook = CanaryHook(num_canaries, seed, mechanism)
    runner.register_hook(hook)
    runner.train()
    privacy = find_session(runner)
    claimed = privacy.ledger.epsilon()
    if 2 * num_canaries * privacy.delta > 0.05:
        runner.logger.warning(
            f'[audit] 2 m delta = {2 * num_canaries * privacy.delta:.3g}: '
            "the theorem's delta term leaves the audit little power; audit "
            'a run with a smaller privacy.delta (e.g. 1e-6) or fewer '
            'canaries')
    canaries = hook.canaries
    audit = audit_from_scores(canaries.scores, canaries.included.astype(int),
                              delta=privacy.delta, confidence=confidence)
    result = dict(
        mechanism=mechanism, claimed_epsilon=claimed,
        epsilon_lower_bound=audit.epsilon, confidence=confidence,
        canaries=num_canaries, guesses=audit.num_guesses,
        correct=audit.num_correct, delta=privacy.delta,
        steps=privacy.ledger.steps,
        noise_multiplier=runner.optim_wrapper.noise_multiplier,
        sample_rate=runner.optim_wrapper.sample_rate,
        caught=audit.epsilon > claimed)
    runner.logger.info(
        f'[audit] {mechanism}: claimed epsilon {claimed:.3f}, audited lower '
        f'bound {audit.epsilon:.3f} at {confidence:.0%} confidence '
        f'({audit.num_correct} of {audit.num_guesses} guesses correct, '
        f'{num_canaries} canaries, delta {privacy.delta:.3g})')
    result['scores'] = dict(included=canaries.scores[canaries.included]
                            .tolist(),
                            excluded=canaries.scores[~canaries.included]
                            .tolist())
    return result


def plot(results: List[Dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results),
                                                       3.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        s = r['scores']
        bins = 40
        ax.hist(s['excluded'], bins=bins, alpha=0.6, label='excluded')
        ax.hist(s['included'], bins=bins, alpha=0.6, label='included')
        ax.set_title(f"{r['mechanism']}: eps >= {r['epsilon_lower_bound']:.2f}"
                     f"\n(claimed {r['claimed_epsilon']:.2f})", fontsize=9)
        ax.set_xlabel('canary score (sum of released coordinate)')
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--canaries', type=int, default=1000)
    parser.add_argument('--confidence', type=float, default=0.95)
    parser.add_argument('--seed', type=int, default=0,
                        help="the auditor's seed (canaries, inclusion)")
    parser.add_argument('--out', default='work_dirs/audit')
    parser.add_argument('--self-check', action='store_true')
    parser.add_argument('--json', action='store_true',
                        help='last line of stdout: one JSON object')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    mechanisms = ['correct'] + (list(BROKEN) if args.self_check else [])
    results = [run_audit(args.config, args.canaries,
                         osp.join(args.out, m), m, args.seed,
                         args.confidence, args.cfg_options)
               for m in mechanisms]
    plot(results, osp.join(args.out, 'canary_scores.png'))
    correct = results[0]
    summary = {k: correct[k] for k in (
        'claimed_epsilon', 'epsilon_lower_bound', 'confidence', 'canaries',
        'guesses', 'correct', 'delta', 'steps', 'noise_multiplier',
        'sample_rate')}
    if args.self_check:
        summary['self_check'] = [
            {k: r[k] for k in ('mechanism', 'claimed_epsilon',
                               'epsilon_lower_bound', 'caught')}
            for r in results[1:]]
    with open(osp.join(args.out, 'audit.json'), 'w') as f:
        json.dump(dict(summary, runs=[{k: v for k, v in r.items()
                                       if k != 'scores'} for r in results]),
                  f, indent=1)
    lines = [f"claimed epsilon {summary['claimed_epsilon']:.3f} (PRV, ledger)"
             f", audited lower bound {summary['epsilon_lower_bound']:.3f} at "
             f"{args.confidence:.0%} confidence ({summary['correct']} of "
             f"{summary['guesses']} guesses correct, {args.canaries} "
             'canaries)']
    for r in summary.get('self_check', []):
        lines.append(f"self-check {r['mechanism']}: lower bound "
                     f"{r['epsilon_lower_bound']:.3f} vs claimed "
                     f"{r['claimed_epsilon']:.3f}: "
                     f"{'caught' if r['caught'] else 'NOT caught'}")
    print('\n'.join(lines))
    if args.json:
        print(json.dumps(summary), flush=True)
    return summary


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
