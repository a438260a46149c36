"""Peak memory of DP steps against non-private ones, with fixed and with
Poisson batch shapes: how much of a DP run's peak RSS is the engine's own
and how much comes from its batches changing shape from step to step.

Four runs, each in a fresh subprocess (its peak RSS its own):

- ``nonprivate-fixed``: MMPose's usual step, every batch of the expected
  size B (what ``tools/train.py`` runs without privacy);
- ``nonprivate-poisson``: the same step on the DP run's batch sizes and
  micro-batches (gradients accumulated over them, one optimizer step);
- ``dp-fixed`` / ``dp-poisson``: the ``fast`` engine's DP step on batches
  of B, and on the Poisson batches (``--seed``: sizes drawn as the sampler
  draws them, records kept with probability B / ``--records``) cut into
  micro-batches of at most ``--max-physical-batch-size`` (default B), as
  the DP loop cuts them.

Per run: its peak RSS over all steps (the first, with its one-off checks,
reported apart), the median of each later step's own peak (``VmHWM`` reset
before the step through ``/proc/self/clear_refs``), the RSS at the end, and
with ``--live`` the peak of live tensor memory within one step over the
step's start (torch profiler): the memory the step needs, whatever the
allocator keeps resident around it. A markdown section goes into ``--out``.

    python tools/benchmark_step_memory.py --preset gn-hrnet-w32 --out FILE
    python tools/benchmark_step_memory.py --preset tiny --steps 3
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_dp_step import (PRESETS, _private_wrapper,  # noqa: E402
                               allocator_suffix, build_model, command,
                               make_batch, status_kib, write_section)

RUNS = ('nonprivate-fixed', 'nonprivate-poisson', 'dp-fixed', 'dp-poisson')


def poisson_batches(steps: int, batch: int, records: int, seed: int,
                    max_physical: int) -> List[List[int]]:
    """Micro-batch sizes of ``steps`` Poisson batches (each record kept
    with probability ``batch / records``), cut as the DP loop cuts them:
    full micro-batches first, the rest last; an empty batch has none."""
    rng = random.Random(seed)
    out = []
    for _ in range(steps):
        n = sum(rng.random() < batch / records for _ in range(records))
        out.append([max_physical] * (n // max_physical) +
                   ([n % max_physical] if n % max_physical else []))
    return out


def _reset_peak() -> None:
    """Start a new ``VmHWM`` at the current RSS (Linux)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def live_peak_bytes(step) -> int:
    """The highest live tensor memory within ``step()`` over its start,
    from the profiler's allocation and free records in time order."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        step()
    # a record's allocations counted at its start, its frees at its end
    changes = sorted(
        (e.time_range.end if e.self_cpu_memory_usage < 0
         else e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events() if e.self_cpu_memory_usage)
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def measure(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    private = args.measure.startswith('dp')
    config, size, privacy, _ = PRESETS[args.preset]
    cfg, model = build_model(config, 'cpu', privacy if private else None)
    B = args.batch_size
    if args.measure.endswith('fixed'):
        plan = [[B]] * args.steps
    else:
        plan = poisson_batches(args.steps, B, args.records, args.seed,
                               args.max_physical_batch_size or B)
    largest = max([sum(p) for p in plan] + [1])
    inputs, samples = make_batch(cfg, largest, size, 'cpu')
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3)
    wrapper = _private_wrapper(model, optimizer, 'fast', B) if private \
        else None

    def step(sizes):
        start = 0
        if wrapper is None:
            optimizer.zero_grad(set_to_none=True)
        for n in sizes:
            part = slice(start, start + n)
            if wrapper is None:
                model.parse_losses(model.loss(inputs[part],
                                              samples[part]))[0].backward()
            else:
                wrapper.private_micro_batch(model, dict(
                    inputs=inputs[part], data_samples=samples[part]),
                    list(range(n)))
            start += n
        if wrapper is None:
            optimizer.step()
        else:
            wrapper.private_step()

    # VmHWM is reset before each step: the run's peak is the largest of
    # the peaks before the first step and within each step.
    out = dict(run=args.measure, sizes=plan, build_kib=status_kib('VmRSS'),
               build_peak_kib=status_kib('VmHWM'), step_peaks_kib=[])
    for sizes in plan:
        _reset_peak()
        step(sizes)
        out['step_peaks_kib'].append(status_kib('VmHWM'))
    out['end_kib'] = status_kib('VmRSS')
    out['peak_kib'] = max([out['build_peak_kib']] + out['step_peaks_kib'])
    if args.live:  # after the peak: the profiler holds memory of its own
        out['live_peak_bytes'] = live_peak_bytes(lambda: step([B]))
    return out


def section(args, results: Dict[str, Dict[str, Any]]) -> str:
    mib = lambda kib: f'{kib / 1024:,.0f}'  # noqa: E731
    base = results['nonprivate-fixed']
    lines = [f'## Step memory: {args.preset}, expected batch '
             f'{args.batch_size}, {args.steps} steps on CPU'
             f'{allocator_suffix()}', '',
             'Command: `' + command('tools/benchmark_step_memory.py', [
                 '--preset', args.preset, '--batch-size',
                 str(args.batch_size), '--steps', str(args.steps),
                 '--records', str(args.records), '--seed', str(args.seed)]
                 + (['--live'] if args.live else []))
             + '`. Poisson micro-batches: '
             + ', '.join('+'.join(map(str, s)) or '0'
                         for s in results['dp-poisson']['sizes']) + '.', '',
             '| run | peak RSS MiB | / non-private fixed | first step peak '
             '| later steps\' peaks (median) | RSS at the end | live peak '
             'in a step of B MiB |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for run in RUNS:
        r = results[run]
        later = r['step_peaks_kib'][1:] or r['step_peaks_kib']
        live = (f"{r['live_peak_bytes'] / 2**20:,.0f}"
                if 'live_peak_bytes' in r else '-')
        lines.append(
            f"| {run} | {mib(r['peak_kib'])} | "
            f"{r['peak_kib'] / base['peak_kib']:.2f}x | "
            f"{mib(r['step_peaks_kib'][0])} | "
            f'{mib(statistics.median(later))} | {mib(r["end_kib"])} | '
            f'{live} |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', default='gn-hrnet-w32', choices=PRESETS)
    parser.add_argument('--batch-size', type=int, default=8,
                        help='expected (Poisson) and fixed batch size B')
    parser.add_argument('--steps', type=int, default=8)
    parser.add_argument('--records', type=int, default=64,
                        help='records the Poisson batches are drawn from')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the Poisson batch sizes')
    parser.add_argument('--max-physical-batch-size', type=int, default=None,
                        help='micro-batch size of the Poisson runs '
                        '(default: the batch size)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--live', action='store_true',
                        help='also the live tensor peak of a step of B '
                        '(torch profiler; one more step)')
    parser.add_argument('--runs', nargs='+', default=list(RUNS),
                        choices=RUNS)
    parser.add_argument('--out', default=None, help='markdown file')
    parser.add_argument('--measure', choices=RUNS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.measure:
        res = measure(args)
        print(json.dumps(res), flush=True)
        return {args.measure: res}
    results = {}
    for run in args.runs:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *argv, '--measure',
             run], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f'{run} failed:\n{done.stderr[-3000:]}')
        results[run] = json.loads(done.stdout.strip().splitlines()[-1])
        print(run, 'peak RSS %.0f MiB' % (results[run]['peak_kib'] / 1024),
              flush=True)
    if args.out and set(RUNS) <= set(results):
        write_section(args.out, section(args, results))
    return results


if __name__ == '__main__':
    main()
