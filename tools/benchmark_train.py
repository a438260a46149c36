"""Time per iteration and peak memory of ``tools/train.py``, DP against
non-private, and where the DP run's time goes.

Both runs train the same model and optimizer on the same generated MPII
records for the same epochs through ``tools/train.py`` (logger interval 1,
no validation, no checkpoint): the non-private one with MMPose's stock
loop and sampler (batch B), the DP one through the privacy mixin (Poisson
batches of expected size B; each ``--variants`` entry is one DP run, ``default`` or settings such as
``max_physical_batch_size=8``). Reported per run: the median of MMEngine's
per-iteration ``time`` and ``data_time`` after ``--warmup`` iterations, the
whole run's wall time and its peak RSS (``wait4`` of the process), and for
DP the samples per step actually drawn: every DP variant samples with one
fixed seed (the same Poisson draws; a fixed seed voids the guarantee, which
a benchmark does not need), whose batch sizes the tool recomputes, so that
"s per expected batch" (time per sample over the timed iterations, times
the expected batch) compares equal work. Each iteration's own time is
logged (``log_processor.window_size=1``): MMPose's window of 50 would
average the first DP step's one-off checks into every later iteration of a
short run. ``--rounds N`` runs the whole list N times, interleaved
(non-private, the DP variants, again ...), and reports the median of each
figure and each round's DP / non-private ratio: this machine's speed drifts
by several percent between minutes, which one pair of runs reads as a
difference. ``--profile`` reruns the DP run
under cProfile and splits its time into the DP step's parts (the clipping
engine's forward/backward and per-layer work, the first-step checks, the
noise and optimizer step, the sampler, the privacy hooks and their epsilon
queries, data loading). A markdown section goes into ``--out``.

    python tools/benchmark_train.py --out docs/reports/benchmarks.md
    python tools/benchmark_train.py --records 16 --epochs 1 --preset tiny
"""
import argparse
import glob
import json
import os
import os.path as osp
import pstats
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_dp_step import (allocator_suffix, command,  # noqa: E402
                               write_section)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: preset -> (DP config, non-private base config, extra lines of both)
PRESETS = {
    'gn-hrnet-w32': (
        'configs/dp_hrnet_mpii.py',
        'mmpose::body_2d_keypoint/topdown_heatmap/mpii/'
        'td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py',
        "model = dict(backbone=dict(norm_cfg=dict(type='GN', num_groups=32),"
        ' init_cfg=None))\n'),
    'tiny': ('configs/synthetic/dp_tiny_hrnet_synthetic.py',
             'configs/synthetic/tiny_hrnet_synthetic.py', ''),
}
#: Profile buckets: (label, functions whose cumulative time it is), most
#: specific first; a bucket's time excludes the buckets listed before it.
BUCKETS = [
    ('privacy set-up (sigma calibration, plan; once)',
     ['privacy_hook.py:before_run', 'privacy_hook.py:before_train']),
    ('final accounting (PRV and RDP epsilon; once)',
     ['privacy_logger_hook.py:after_train']),
    ('first-step checks (engine verification, loss check; once)',
     ['verification.py:verify_engine', 'hooks.py:check_same_loss']),
    ('clipping engine (forward, backward, per-layer work, norms, sums)',
     ['base.py:clipped_sum']),
    ('micro-batch preparation (data preprocessor, units, split, padding)',
     ['optim_wrapper.py:private_micro_batch', 'loops.py:split_batch',
      'loops.py:batch_unit_ids', 'static_batches.py:pad_micro_batch']),
    ('noise, scaling, optimizer step', ['optim_wrapper.py:private_step']),
    ('per-step privacy hooks (ledger, epsilon for the log)',
     ['privacy_logger_hook.py:after_train_iter',
      'privacy_hook.py:after_train_iter', 'privacy_hook.py:before_train_iter',
      'privacy_checkpoint_hook.py:after_train_iter',
      'budget_stop_hook.py:after_train_iter', 'buffer_guard_hook.py:']),
    ('data loading (collate, Poisson sampler)', ['dataloader.py:__next__']),
]
#: Sampler seed of every DP run (the same draws in each variant).
SAMPLER_SEED = 0
#: Columns of the peak-RSS-by-phase table (tools/rss_by_phase.py's phases).
PHASE_COLUMNS = ['privacy set-up (calibration, plan)', 'first-step checks',
                 'clipping engine', 'noise and optimizer step',
                 'data loading', 'final accounting', 'other']
#: Buckets that run inside an earlier one: (bucket, the ones it contains).
NESTED = {3: (2, ), 4: (3, )}


def write_configs(preset: str, data: str, out: str, batch: int, epochs: int,
                  privacy: Dict[str, str], name: str = 'dp'
                  ) -> Dict[str, str]:
    dp, base, extra = PRESETS[preset]
    root = data.rstrip('/') + '/'
    common = f"""data_root = '{root}'
{extra}train_dataloader = dict(batch_size={batch}, num_workers=0,
    persistent_workers=False, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root,
    headbox_file=data_root + 'annotations/mpii_gt_val.mat'))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={epochs}, val_interval={epochs + 1})
param_scheduler = []
log_processor = dict(window_size=1)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval={epochs + 1}, save_last=False,
                                     save_best=None))
visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
"""
    # One fixed sampler seed for every DP variant: the same Poisson draws,
    # so the variants compare on equal work (a fixed seed voids the
    # guarantee; this is a benchmark).
    privacy = dict(dict(sampler_seed=SAMPLER_SEED), **privacy)
    settings = ''.join(f', {k}={v}' for k, v in privacy.items())
    paths = {}
    for run, parent, tail in (
            ('nonprivate', base, ''),
            (name, dp, f'privacy = dict(target_epsilon=8.0{settings})\n')):
        parent = parent if parent.startswith('mmpose::') else \
            osp.join(ROOT, parent)
        paths[run] = osp.join(out, _file_name(run) + '.py')
        with open(paths[run], 'w') as f:
            f.write(f"_base_ = ['{parent}']\n" + common + tail)
    return paths


def _file_name(run: str) -> str:
    return ''.join(c if c.isalnum() else '_' for c in run)


def run_train(config: str, work_dir: str, profile: Optional[str] = None,
              by_phase: bool = False) -> Dict:
    """Train through tools/train.py (with ``by_phase``: under
    tools/rss_by_phase.py); wall time, peak RSS, per-iter log."""
    cmd = [sys.executable]
    if profile:
        cmd += ['-m', 'cProfile', '-o', profile]
    script = 'rss_by_phase.py' if by_phase else 'train.py'
    cmd += [osp.join(ROOT, 'tools', script), config, '--work-dir',
            work_dir]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f'{config} failed:\n{output[-3000:]}')
    scalars = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                        'scalars.json')))[-1]
    with open(scalars) as f:  # training iterations (not validation)
        rows = [row for row in map(json.loads, f)
                if 'time' in row and 'iter' in row]
    phases = [json.loads(line.split(' ', 1)[1])['by_phase']
              for line in output.splitlines()
              if line.startswith('RSS_BY_PHASE ')]
    return dict(wall_s=wall, peak_rss_mib=usage.ru_maxrss / 1024, rows=rows,
                by_phase=phases[0] if phases else None)


def drawn_batch_sizes(records: int, batch: int, epochs: int) -> List[int]:
    """The Poisson batch size of every DP step of the benchmark (one
    person per generated image: N = records units, q = batch / N), as the
    sampler draws them with :data:`SAMPLER_SEED`."""
    import numpy as np
    from mmpose_dp.privacy.mechanisms import GaussianMechanism
    q, steps = batch / records, max(1, round(records / batch))
    sizes = []
    for epoch in range(epochs):
        rng = np.random.default_rng([SAMPLER_SEED, epoch])
        sizes += [len(GaussianMechanism().draw(rng, epoch * steps + i,
                                               records, q, SAMPLER_SEED))
                  for i in range(steps)]
    return sizes


def summarise(run: Dict, warmup: int,
              sizes: Optional[List[int]] = None) -> Dict:
    """Median and mean of the iterations after ``warmup``: each row's
    ``time`` is that iteration's own (``log_processor.window_size=1``; a
    window mean would carry the first step's one-off checks into the
    following iterations)."""
    rows = run['rows'][warmup:] or run['rows']
    # Time per sample over the timed iterations (each iteration's batch:
    # the drawn size, or the fixed one), times the expected batch.
    timed = [r for r in rows if sizes is None or r['step'] <= len(sizes)]
    samples = [sizes[r['step'] - 1] if sizes else run['batch']
               for r in timed]
    per_sample = sum(r['time'] for r in timed) / max(sum(samples), 1)
    return dict(time=statistics.median(r['time'] for r in rows),
                mean_time=statistics.mean(r['time'] for r in rows),
                per_expected_batch=per_sample * run['batch'],
                mean_batch=statistics.mean(samples),
                data_time=statistics.median(r['data_time'] for r in rows),
                iters=len(run['rows']), wall_s=run['wall_s'],
                peak_rss_mib=run['peak_rss_mib'], by_phase=run['by_phase'])


def combine(rounds: Dict[str, List[Dict]]) -> Dict[str, Dict]:
    """Each run's summaries over the rounds: the median of every figure,
    and (``ratios``) each round's time per expected batch and peak RSS
    over that round's non-private run's."""
    base = rounds['nonprivate']
    out = {}
    for name, summaries in rounds.items():
        merged = {k: statistics.median(s[k] for s in summaries)
                  for k, v in summaries[0].items()
                  if isinstance(v, (int, float))}
        merged['by_phase'] = summaries[0]['by_phase']
        merged['ratios'] = [
            (s['per_expected_batch'] / b['per_expected_batch'],
             s['peak_rss_mib'] / b['peak_rss_mib'])
            for s, b in zip(summaries, base)]
        out[name] = merged
    return out


def breakdown(profile: str) -> List[tuple]:
    """(bucket, seconds) from the DP run's cProfile: each bucket the
    cumulative time of its functions, less the buckets nested in it."""
    stats = pstats.Stats(profile).stats
    total = max(v[3] for v in stats.values())
    times = [sum(v[3] for (file, _, func), v in stats.items()
                 if any(_matches(p, file, func) for p in patterns))
             for _, patterns in BUCKETS]
    own = [t - sum(times[j] for j in NESTED.get(i, ()))
           for i, t in enumerate(times)]
    out = [(label, max(t, 0.0)) for (label, _), t in zip(BUCKETS, own)]
    out.append(('everything else (imports, runner, other hooks)',
                max(total - sum(s for _, s in out), 0.0)))
    return [('total (profiled)', total)] + out


def _matches(pattern: str, file: str, func: str) -> bool:
    where, _, name = pattern.partition(':')
    return file.endswith(where) and (not name or func == name)


def render(preset, batch, epochs, records, res, parts, argv) -> str:
    base = res['nonprivate']
    lines = [f'## tools/train.py, {preset}, expected batch {batch}, '
             f'{epochs} epochs of {records} records on CPU'
             f'{allocator_suffix()}', '',
             f"`{command('tools/benchmark_train.py', argv)}`", '']
    rounds = len(base.get('ratios', ()))
    if rounds > 1:
        lines += [f'Each figure: the median of {rounds} interleaved rounds.',
                  '']
    lines += ['| run | s / iter (median) | s / iter (mean) | samples / '
              'iter (mean) | s per expected batch | data s / iter | '
              'iterations | wall s | peak RSS MiB |',
              '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for name, r in res.items():
        lines.append(f"| {name} | {r['time']:.3f} | {r['mean_time']:.3f} | "
                     f"{r['mean_batch']:.2f} | "
                     f"{r['per_expected_batch']:.3f} | "
                     f"{r['data_time']:.3f} | {r['iters']:.0f} | "
                     f"{r['wall_s']:.0f} | {r['peak_rss_mib']:.0f} |")
    lines.append('')
    for name, r in res.items():
        if name != 'nonprivate' and len(r.get('ratios', ())) > 1:
            time_ratios = sorted(t for t, _ in r['ratios'])
            rss_ratios = sorted(m for _, m in r['ratios'])
            lines.append(
                f"{name} / non-private, each of {len(r['ratios'])} "
                'interleaved rounds: time per expected batch ' +
                ', '.join(f'{t:.2f}x' for t, _ in r['ratios']) +
                f' (median {statistics.median(time_ratios):.2f}x), peak '
                'RSS ' + ', '.join(f'{m:.2f}x' for _, m in r['ratios']) +
                f' (median {statistics.median(rss_ratios):.2f}x).')
        elif name != 'nonprivate':
            lines.append(
                f"{name} / non-private: time per expected batch "
                f"{r['per_expected_batch'] / base['per_expected_batch']:.2f}x"
                f" (per iteration: median "
                f"{r['time'] / base['time']:.2f}x, mean "
                f"{r['mean_time'] / base['mean_time']:.2f}x), peak RSS "
                f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x, wall "
                f"{r['wall_s'] / base['wall_s']:.2f}x.")
    phased = {n: r['by_phase'] for n, r in res.items() if r['by_phase']}
    if phased:
        lines += ['', 'Highest RSS (MiB) seen while each phase ran '
                  '(tools/rss_by_phase.py, sampled every 20 ms):', '',
                  '| run | ' + ' | '.join(PHASE_COLUMNS) + ' |',
                  '|---|' + '---:|' * len(PHASE_COLUMNS)]
        for name, phases in phased.items():
            lines.append(f'| {name} | ' + ' | '.join(
                str(phases.get(c, '')) for c in PHASE_COLUMNS) + ' |')
    if parts:
        lines += ['', 'Where the DP run\'s time goes (cProfile, a separate '
                  'run; profiling slows Python-heavy parts):', '',
                  '| part | s | share |', '|---|---:|---:|']
        total = parts[0][1]
        for label, s in parts:
            lines.append(f'| {label} | {s:.1f} | {100 * s / total:.0f}% |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> Dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', default='gn-hrnet-w32', choices=PRESETS)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--records', type=int, default=64)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--variants', nargs='*', default=['default'],
                   help="DP runs: 'default' or KEY=VALUE[,KEY=VALUE] "
                   'privacy settings (e.g. max_physical_batch_size=8)')
    p.add_argument('--rounds', type=int, default=1,
                   help='run every configuration this many times, '
                   'interleaved; report medians and per-round ratios')
    p.add_argument('--profile', action='store_true')
    p.add_argument('--memory-by-phase', action='store_true',
                   help='run under tools/rss_by_phase.py: the peak RSS of '
                   'each phase (set-up, first-step checks, engine, ...)')
    p.add_argument('--work-dir', default='work_dirs/benchmark_train')
    p.add_argument('--out', help='markdown file to write the section into')
    args = p.parse_args(argv)
    from make_synthetic_mpii import make_synthetic_mpii
    os.makedirs(args.work_dir, exist_ok=True)
    data = osp.join(args.work_dir, 'data')
    if not osp.exists(osp.join(data, 'annotations')):
        make_synthetic_mpii(data, num_train=args.records, num_val=4, seed=0)
    configs = {}
    for variant in args.variants:
        privacy = {} if variant == 'default' else dict(
            kv.split('=', 1) for kv in variant.split(','))
        written = write_configs(args.preset, data, args.work_dir,
                                args.batch_size, args.epochs, privacy,
                                'dp' if variant == 'default' else
                                'dp ' + variant)
        configs.update(written)
    rounds: Dict[str, List[Dict]] = {name: [] for name in configs}
    sizes = drawn_batch_sizes(args.records, args.batch_size, args.epochs)
    for i in range(args.rounds):
        for name, config in configs.items():
            work_dir = osp.join(args.work_dir, _file_name(name) + (
                f'_round{i + 1}' if args.rounds > 1 else ''))
            run = run_train(config, work_dir, by_phase=args.memory_by_phase)
            run['batch'] = args.batch_size
            rounds[name].append(summarise(
                run, args.warmup, None if name == 'nonprivate' else sizes))
            print(f'round {i + 1}', name,
                  {k: round(v, 3) if isinstance(v, float) else v
                   for k, v in rounds[name][-1].items()}, flush=True)
    res = combine(rounds)
    parts = []
    if args.profile:
        profile = osp.join(args.work_dir, 'dp.prof')
        first_dp = next(c for n, c in configs.items() if n != 'nonprivate')
        run_train(first_dp, osp.join(args.work_dir, 'dp_profiled'),
                  profile)
        parts = breakdown(profile)
    text = render(args.preset, args.batch_size, args.epochs, args.records,
                  res, parts, argv)
    print(text)
    if args.out:
        write_section(args.out, text)
    return dict(runs=res, breakdown=parts)


if __name__ == '__main__':
    main()
