"""Time and memory of one DP-SGD step against one non-private step, and of
the hybrid step (projection onto m public per-sample gradients + public
features), including the PDP refresh.

Each mode runs in a fresh subprocess (this script with ``--mode ... --json``)
so that its peak RSS is its own. The parent prints the DP/non-private ratios
and writes one markdown section per config and device into ``--out``,
keeping the sections of other configs and devices.

Example:
    python tools/benchmark_dp_step.py                  # GN-HRNet-W32, B=8
    python tools/benchmark_dp_step.py --tiny --steps 1 --out /tmp/bench.md
"""
import argparse
import datetime
import json
import os
import os.path as osp
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'dp_hrnet_mpii.py')
TINY_CONFIG = osp.join(ROOT, 'configs', 'synthetic', 'tiny_hrnet_synthetic.py')
MODES = ('nonprivate', 'private', 'hybrid')
TITLE = ('# Benchmarks\n\nWritten by `tools/benchmark_dp_step.py` (time and '
         'memory of a step) and `tools/benchmark_accounting.py` (privacy '
         'accounting).')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line; ``--tiny`` picks the tiny config at 64x64."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', help='default: configs/dp_hrnet_mpii.py')
    p.add_argument('--tiny', action='store_true',
                   help='tiny synthetic HRNet at 64x64 (smoke run)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'),
                   help="default: the config's codec input size")
    p.add_argument('--steps', type=int, default=3, help='timed steps')
    p.add_argument('--device', help='default: cuda if available, else cpu')
    p.add_argument('--threads', type=int, default=os.cpu_count() or 1,
                   help='torch CPU threads (default: all cores)')
    p.add_argument('--public-samples', type=int, default=100,
                   help='m, public samples of the hybrid (rank k = m)')
    p.add_argument('--projection-dtype', default='float32',
                   help='storage of the public gradients G')
    p.add_argument('--no-hybrid', action='store_true',
                   help='skip the hybrid mode')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'benchmarks.md'))
    p.add_argument('--mode', choices=MODES, help='measure this mode only')
    p.add_argument('--json', action='store_true', help='with --mode: JSON')
    args = p.parse_args(argv)
    if args.tiny:
        args.config = args.config or TINY_CONFIG
        args.input_size = args.input_size or [64, 64]
    args.config = args.config or DEFAULT_CONFIG
    return args


def build_model(config: str, device: str) -> Tuple[Any, Any]:
    """The loaded ``Config`` at ``config`` and its model, in train mode."""
    import mmpose_dp  # noqa: F401  (registers the project's components)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope('mmpose')
    return cfg, MODELS.build(cfg.model).to(device).train()


def model_name(cfg: Any) -> str:
    """A short model description such as ``HRNet-W32, GN, HeatmapHead``."""
    backbone = cfg.model.backbone
    name = backbone.type
    if name == 'HRNet':
        name += f"-W{backbone.extra['stage4']['num_channels'][0]}"
    norm = backbone.get('norm_cfg', {}).get('type', 'BN')
    return f'{name}, {norm}, {cfg.model.head.type}'


def make_batch(cfg: Any, batch: int, size: Sequence[int],
               device: str) -> Tuple[Any, List[Any]]:
    """Random images ``[B, 3, H, W]`` for input ``size`` (W, H) and B
    samples with ``gt_fields.heatmaps [K, H/4, W/4]`` and
    ``gt_instance_labels.keypoint_weights [1, K]`` (K: the head's outputs).
    """
    import torch
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    k, (w, h) = cfg.model.head.out_channels, size
    samples = []
    for _ in range(batch):
        s = PoseDataSample()
        s.gt_fields = PixelData(
            heatmaps=torch.rand(k, h // 4, w // 4, device=device))
        s.gt_instance_labels = InstanceData(
            keypoint_weights=torch.ones(1, k, device=device))
        samples.append(s)
    return torch.randn(batch, 3, h, w, device=device), samples


def raw_samples(cfg: Any, n: int, size: Sequence[int]) -> List[dict]:
    """``n`` uncollated samples (uint8 image + targets), as a dataset
    pipeline would give them to ``pseudo_collate``."""
    import torch
    _, samples = make_batch(cfg, n, size, 'cpu')
    w, h = size
    return [dict(inputs=torch.randint(0, 256, (3, h, w), dtype=torch.uint8),
                 data_samples=s) for s in samples]


def step_fn(model: Any, mode: str, batch: int,
            hybrid: Optional[dict] = None) -> Callable[[Any, list], None]:
    """``step(inputs, data_samples)``: one training step of ``mode``.

    Args:
        model: the model from :func:`build_model`.
        mode: ``'nonprivate'`` (forward, backward, AdamW) or ``'private'``
            (through ``DPOptimWrapper``: per-sample gradients clipped at
            C=0.1, noise sigma=1.0, AdamW).
        batch: the expected batch size of a DP step.
    """
    import torch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_of(inputs, samples):
        return model.parse_losses(model.loss(inputs, samples))[0]

    def step(inputs, samples):
        optimizer.zero_grad(set_to_none=True)
        loss_of(inputs, samples).backward()
        optimizer.step()

    if mode == 'nonprivate':
        return step
    from mmpose_dp.engine import DPOptimWrapper
    from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
    from mmpose_dp.privacy import PrivacyLedger

    class Preprocessed(MMEngineBatchLoss):
        def prepare(self, model, batch):  # inputs are preprocessed already
            return batch

    ow = DPOptimWrapper(optimizer, max_grad_norm=0.1, noise_seed=0,
                        engine='hooks')
    ow.attach(model, 'mean', Preprocessed())
    ow.configure(noise_multiplier=1.0, sample_rate=0.01,
                 expected_batch_size=batch, ledger=PrivacyLedger(1e-5))
    if mode == 'hybrid':
        from mmengine.dataset import pseudo_collate
        from mmpose_dp.engine.stages import ProjectionStage, PublicFeatureStage
        m = hybrid['public_samples']
        ow.stages = [
            ProjectionStage(model, hybrid['public'], rank=m,
                            interval=10**9, dtype=hybrid['dtype']),
            PublicFeatureStage(model, [pseudo_collate(hybrid['features'])],
                               weight=0.1)]

    def private_step(inputs, samples):
        ow.private_micro_batch(model, dict(inputs=inputs,
                                           data_samples=samples),
                               list(range(len(samples))))
        ow.private_step()
    return private_step


def rss_kib() -> int:
    """Current resident set size of this process in KiB (Linux)."""
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith('VmRSS:'))


def measure(args: argparse.Namespace) -> Dict[str, Any]:
    """Build the model, take 1 warm-up and ``args.steps`` timed steps.

    Returns:
        Model facts, step times (s) and median, RSS after the build and peak
        RSS (KiB), load average at the end; on CUDA allocated bytes too.
    """
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg, model = build_model(args.config, args.device)
    size = args.input_size or list(cfg.model.head.decoder.input_size)
    out = dict(mode=args.mode, model=model_name(cfg), input_size=size,
               params=sum(p.numel() for p in model.parameters()
                          if p.requires_grad), rss_build_kib=rss_kib())
    hybrid = None
    if args.mode == 'hybrid':
        hybrid = dict(public_samples=args.public_samples,
                      dtype=args.projection_dtype,
                      public=raw_samples(cfg, args.public_samples, size),
                      features=raw_samples(cfg, args.batch_size, size))
        out['public_samples'] = args.public_samples
    step = step_fn(model, args.mode, args.batch_size, hybrid)
    inputs, samples = make_batch(cfg, args.batch_size, size, args.device)
    times = []
    for _ in range(args.steps + 1):  # the first one is the warm-up
        sync()
        start = time.perf_counter()
        step(inputs, samples)
        sync()
        times.append(time.perf_counter() - start)
    if args.mode == 'hybrid':
        from mmengine.logging import MessageHub
        hub = MessageHub.get_current_instance()
        out['refresh_s'] = hub.get_scalar('train/pdp_refresh_time').current()
        out['first_step_s'] = times[0]  # includes the refresh
    out.update(times=times[1:], median_s=statistics.median(times[1:]),
               load=os.getloadavg()[0],
               peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if cuda:
        out['cuda_peak_bytes'] = torch.cuda.max_memory_allocated()
    return out


def run_mode(argv: Sequence[str], mode: str) -> Dict[str, Any]:
    """Run :func:`measure` for ``mode`` in a fresh Python; its JSON result."""
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--mode', mode,
           '--json']
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{mode} run failed:\n{proc.stderr[-3000:]}')
    return json.loads([ln for ln in proc.stdout.splitlines()
                       if ln.startswith('{')][-1])


def machine(device: str) -> Dict[str, str]:
    """CPU model, core count, RAM, torch version and device, as strings."""
    import torch
    with open('/proc/cpuinfo') as f:
        cpu = next((ln.split(':', 1)[1].strip() for ln in f
                    if ln.startswith('model name')), 'unknown CPU')
    with open('/proc/meminfo') as f:
        ram = int(f.readline().split()[1]) / 2**20
    dev = 'CPU'
    if device.startswith('cuda'):
        dev = f'CUDA ({torch.cuda.get_device_name(torch.device(device))})'
    return dict(cpu=cpu, cores=str(os.cpu_count()), ram=f'{ram:.1f} GiB',
                torch=torch.__version__, device=dev)


def table(n: Dict[str, Any], r: Dict[str, Any],
          h: Optional[Dict[str, Any]] = None) -> List[str]:
    """Markdown table of the non-private (n), DP (r) and hybrid (h) results,
    with the DP/non-private ratios."""
    cols = [n, r] + ([h] if h else [])
    rows = [(f"Time per step (s, median of {len(r['times'])})",
             [d['median_s'] for d in cols], '.3f')]
    for label, key, base, scale in [
            ('Peak RSS (GiB)', 'peak_rss_kib', None, 2**20),
            ('RSS growth after model build (GiB)', 'peak_rss_kib',
             'rss_build_kib', 2**20),
            ('Peak CUDA allocated (GiB)', 'cuda_peak_bytes', None, 2**30)]:
        if key in r:
            rows.append((label, [(d[key] - (d[base] if base else 0)) / scale
                                 for d in cols], '.2f'))
    head = '| | non-private | DP-SGD | DP / non-private |'
    rule = '|---|---:|---:|---:|'
    if h:
        head += f" hybrid (m = k = {h['public_samples']}) |"
        rule += '---:|'
    lines = [head, rule]
    for label, vals, fmt in rows:
        ratio = f'{vals[1] / vals[0]:.2f}x' if vals[0] > 0 else 'n/a'
        cells = f'| {label} | {vals[0]:{fmt}} | {vals[1]:{fmt}} | {ratio} |'
        if h:
            cells += f' {vals[2]:{fmt}} |'
        lines.append(cells)
    if h:
        lines.append(
            f"| PDP refresh (s; {h['public_samples']} per-sample public "
            f"gradients, eigh, in the first step) | | | | "
            f"{h['refresh_s']:.1f} |")
    return lines


def render(args: argparse.Namespace, argv: Sequence[str],
           res: Dict[str, Dict[str, Any]]) -> str:
    """The markdown section, headed ``## <config> on <device>``."""
    m, n, r = machine(args.device), res['nonprivate'], res['private']
    hy = res.get('hybrid')
    (w, h), name = r['input_size'], osp.splitext(osp.basename(args.config))[0]
    cmd = shlex.join(['python', 'tools/benchmark_dp_step.py', *argv])
    times = '; '.join(f'{k} ' + ', '.join(f'{t:.3f}' for t in d['times'])
                      for k, d in (('non-private', n), ('DP-SGD', r),
                                   ('hybrid', hy)) if d)
    return '\n'.join([
        f"## {name} on {m['device']}", '', f'- Command: `{cmd}`',
        f'- Date: {datetime.date.today().isoformat()}',
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; torch "
        f"{m['torch']}; device {m['device']}; {args.threads} torch threads",
        f'- 1-min load average: {args.load:.2f} at start, '
        f"{n['load']:.2f} / {r['load']:.2f} after the non-private / DP run",
        f"- Model: {r['model']} (`{name}.py`), {r['params']:,} trainable "
        'parameters',
        f'- Batch size {args.batch_size}, input {w}x{h}; '
        'non-private: AdamW; DP: DPOptimWrapper (per-sample clipping at '
        'C=0.1, Gaussian noise sigma=1.0) + AdamW' + (
            f"; hybrid: + projection onto the top-{hy['public_samples']} "
            'subspace of as many public per-sample gradients (G in '
            f'{args.projection_dtype}) + public-feature gradient (lambda 0.1)'
            if hy else ''),
        f'- Timed steps (s): {times}', '', *table(n, r, hy)]) + '\n'


def write_section(path: str, section: str) -> None:
    """Replace the section with the same heading in ``path``, or append it."""
    text = open(path).read() if osp.exists(path) else TITLE
    parts = ('\n' + text).split('\n## ')
    sections = [('## ' + s).rstrip('\n') + '\n' for s in parts[1:]]
    heading = section.splitlines()[0]
    kept = [section if s.splitlines()[0] == heading else s for s in sections]
    if section not in kept:
        kept.append(section)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join([parts[0].strip('\n') + '\n', *kept]))


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Measure ``--mode`` or both modes; print and write the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.mode:
        res = measure(args)
        print(json.dumps(res) if args.json else res, flush=True)
        return {args.mode: res}
    args.load = os.getloadavg()[0]  # other work on the machine skews times
    child = [*argv, '--device', args.device]
    modes = MODES[:2] if args.no_hybrid else MODES
    res = {mode: run_mode(child, mode) for mode in modes}
    n, r = res['nonprivate'], res['private']
    for label, d in (('non-private', n), ('DP-SGD', r),
                     ('hybrid', res.get('hybrid'))):
        if d is None:
            continue
        print(f"{label:12} {d['median_s']:.3f} s/step, peak RSS "
              f"{d['peak_rss_kib'] / 2**20:.2f} GiB")
    print(f"ratio DP/non-private: time {r['median_s'] / n['median_s']:.2f}x,"
          f" peak RSS {r['peak_rss_kib'] / n['peak_rss_kib']:.2f}x")
    write_section(args.out, render(args, argv, res))
    print(f'results written to {args.out}')
    return res


if __name__ == '__main__':
    main()
