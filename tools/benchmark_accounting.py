"""Wall time of the privacy accounting at MPII scale: sigma calibration,
the per-interval logged epsilon and the final fine epsilon.

Targets (issue #2, on the 2-core CPU machine): calibration under 30 s, a
logged epsilon under 1 s. The result is a markdown section in ``--out``
(default docs/reports/benchmarks.md), replacing the section with the same
heading.

Example:
    python tools/benchmark_accounting.py               # the paper's MPII plan
    python tools/benchmark_accounting.py --epsilons 1 --epochs 1 --out /tmp/a.md
"""
import argparse
import datetime
import math
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmark_dp_step import machine, write_section
from opacus.accountants.utils import get_noise_multiplier

from mmpose_dp.privacy import (EpsilonTracker, PrivacyLedger,
                               calibrate_noise_multiplier)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CALIBRATION_TARGET_S = 30.0
LOGGED_EPSILON_TARGET_S = 1.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Defaults are the paper's MPII plan (PAPER.md)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epsilons', type=float, nargs='+',
                   default=[0.2, 0.4, 0.6, 0.8])
    p.add_argument('--dataset-size', type=int, default=22246)
    p.add_argument('--batch-size', type=int, default=32,
                   help='expected (Poisson) batch size')
    p.add_argument('--epochs', type=int, default=25)
    p.add_argument('--delta', type=float, default=1 / 22000)
    p.add_argument('--log-interval', type=int, default=50,
                   help='steps between logged epsilons')
    p.add_argument('--queries', type=int, default=5,
                   help='logged-epsilon queries timed per epsilon')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'reports',
                                             'benchmarks.md'))
    return p.parse_args(argv)


def timed(fn: Callable) -> Tuple[float, float]:
    """(result, seconds) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure(eps: float, q: float, steps: int, args) -> Dict[str, float]:
    """Calibrate, then time a tracker through the run and the final fine
    epsilon of the full ledger."""
    sigma, calibrate_s = timed(lambda: calibrate_noise_multiplier(
        eps, args.delta, q, steps))
    sigma_rdp = get_noise_multiplier(
        target_epsilon=eps, target_delta=args.delta, sample_rate=q,
        steps=steps, accountant='rdp', epsilon_tolerance=0.001)
    ledger = PrivacyLedger(args.delta)
    tracker, build_s = timed(lambda: EpsilonTracker(
        ledger, sigma, q, planned_steps=steps, final_epsilon=eps))
    # Queries spread over the run, each after log_interval more steps.
    at = [steps * (i + 1) // args.queries for i in range(args.queries)]
    query_s, logged = [], 0.0
    for target in at:
        while ledger.steps < target:
            ledger.step(sigma, q)
        logged, seconds = timed(tracker.epsilon)
        query_s.append(seconds)
    final, final_s = timed(ledger.epsilon)
    return dict(epsilon=eps, sigma=sigma, sigma_rdp=sigma_rdp,
                calibrate_s=calibrate_s, tracker_build_s=build_s,
                query_median_s=statistics.median(query_s),
                query_max_s=max(query_s), logged_final=logged,
                final=final, final_s=final_s)


def render(rows: List[Dict[str, float]], q: float, steps: int,
           args, argv: Sequence[str]) -> str:
    """One markdown section: settings, a row per epsilon, targets met."""
    m = machine('cpu')
    command = ' '.join(['python tools/benchmark_accounting.py', *argv])
    lines = [
        f"## Privacy accounting on {m['cpu']}, {m['cores']} cores",
        '',
        f'- Command: `{command}`',
        f'- Date: {datetime.date.today().isoformat()}',
        f"- Plan: N = {args.dataset_size}, expected batch "
        f'{args.batch_size} (q = {q:.3g}), {args.epochs} epochs = {steps} '
        f'steps, delta = {args.delta:.3g}',
        '- Calibration: PRV upper bound, coarse bisection + fine check '
        '(`calibrate_noise_multiplier`); RDP sigma (Opacus) for comparison',
        f'- Logged epsilon: one `EpsilonTracker` for the plan, queried '
        f'{args.queries} times spread over the run; final: '
        '`PrivacyLedger.epsilon()` (fine pass) of the full ledger',
        '',
        '| epsilon | sigma (PRV) | sigma (RDP) | calibration (s) | tracker '
        'build (s) | logged epsilon (s, median / max) | final epsilon '
        '(value, s) |',
        '|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(
            f"| {r['epsilon']:g} | {r['sigma']:.3f} | {r['sigma_rdp']:.3f} | "
            f"{r['calibrate_s']:.1f} | {r['tracker_build_s']:.1f} | "
            f"{r['query_median_s']:.3f} / {r['query_max_s']:.3f} | "
            f"{r['final']:.4f}, {r['final_s']:.1f} |")
    worst_cal = max(r['calibrate_s'] for r in rows)
    worst_query = max(r['query_max_s'] for r in rows)
    ok = lambda x, t: 'met' if x < t else 'MISSED'  # noqa: E731
    lines += [
        '',
        f'Targets: calibration < {CALIBRATION_TARGET_S:g} s '
        f'({ok(worst_cal, CALIBRATION_TARGET_S)}, worst {worst_cal:.1f} s); '
        f'logged epsilon < {LOGGED_EPSILON_TARGET_S:g} s '
        f'({ok(worst_query, LOGGED_EPSILON_TARGET_S)}, worst '
        f'{worst_query:.3f} s).',
    ]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> List[Dict[str, float]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    q = args.batch_size / args.dataset_size
    steps = math.ceil(args.epochs * args.dataset_size / args.batch_size)
    rows = []
    for eps in args.epsilons:
        rows.append(measure(eps, q, steps, args))
        r = rows[-1]
        print(f"eps {eps:g}: sigma {r['sigma']:.3f} (RDP "
              f"{r['sigma_rdp']:.3f}), calibration {r['calibrate_s']:.1f} s, "
              f"logged epsilon {r['query_median_s']:.3f} s, final "
              f"{r['final']:.4f} in {r['final_s']:.1f} s", flush=True)
    write_section(args.out, render(rows, q, steps, args, argv))
    print(f'written to {args.out}')
    return rows


if __name__ == '__main__':
    main()
