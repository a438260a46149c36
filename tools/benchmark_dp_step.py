"""Time and memory of one DP-SGD step against one non-private step.

Each mode runs in a fresh subprocess (this script with ``--mode ... --json``)
so that its peak RSS is its own. The parent prints the DP/non-private ratios
and writes a markdown section per config and device into ``--out``.

Example:
    python tools/benchmark_dp_step.py                  # GN-HRNet-W32, B=8
    python tools/benchmark_dp_step.py --tiny --steps 1 --out /tmp/bench.md
"""
import argparse
import datetime
import json
import os
import os.path as osp
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'dp_hrnet_mpii.py')
TINY_CONFIG = osp.join(ROOT, 'configs', 'synthetic', 'tiny_hrnet_synthetic.py')
MODES = ('nonprivate', 'private')
TITLE = '# DP-SGD step benchmarks\n\nWritten by `tools/benchmark_dp_step.py`.'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line; ``--tiny`` picks the tiny config at 64x64."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=None, help='default: dp_hrnet_mpii')
    p.add_argument('--tiny', action='store_true',
                   help='tiny synthetic HRNet at 64x64 (smoke run)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--input-size', type=int, nargs=2, metavar=('W', 'H'))
    p.add_argument('--steps', type=int, default=3, help='timed steps')
    p.add_argument('--device', default=None, help='default: cuda if any')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'benchmarks.md'))
    p.add_argument('--mode', choices=MODES, help='measure one mode only')
    p.add_argument('--json', action='store_true',
                   help='print the measurement as one JSON line')
    args = p.parse_args(argv)
    if args.tiny:
        args.config = args.config or TINY_CONFIG
        args.input_size = args.input_size or [64, 64]
    args.config = args.config or DEFAULT_CONFIG
    return args


def build_model(config: str, device: str):
    """Build the top-down model of ``config`` in train mode on ``device``."""
    import mmpose_dp  # noqa: F401  (registers the project's components)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope('mmpose')
    model = MODELS.build(cfg.model).to(device)
    return cfg, model.train()


def model_name(cfg) -> str:
    """A short description such as ``HRNet-W32, GN, HeatmapHead``."""
    backbone = cfg.model.backbone
    name = backbone.type
    if name == 'HRNet':
        name += f"-W{backbone.extra['stage4']['num_channels'][0]}"
    norm = backbone.get('norm_cfg', {}).get('type', 'BN')
    return f'{name}, {norm}, {cfg.model.head.type}'


def make_batch(cfg, batch: int, size: Sequence[int], device: str):
    """Random images ``[B, 3, H, W]`` and samples with heatmap targets."""
    import torch
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    k = cfg.model.head.out_channels
    w, h = size
    inputs = torch.randn(batch, 3, h, w, device=device)
    samples = []
    for _ in range(batch):
        s = PoseDataSample()
        s.gt_fields = PixelData(
            heatmaps=torch.rand(k, h // 4, w // 4, device=device))
        s.gt_instance_labels = InstanceData(
            keypoint_weights=torch.ones(1, k, device=device))
        samples.append(s)
    return inputs, samples


def step_fn(model, mode: str, batch: int):
    """A closure that runs one training step of ``mode`` on a batch."""
    import torch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_of(inputs, samples):
        loss, _ = model.parse_losses(model.loss(inputs, samples))
        return loss

    if mode == 'nonprivate':
        def step(inputs, samples):
            optimizer.zero_grad(set_to_none=True)
            loss_of(inputs, samples).backward()
            optimizer.step()
        return step
    from mmpose_dp.engine import DPOptimWrapper
    from mmpose_dp.privacy import PrivacyLedger, disable_inplace_activations
    disable_inplace_activations(model)
    ow = DPOptimWrapper(optimizer, max_grad_norm=0.1, noise_seed=0)
    ow.attach(model, 'mean')
    ow.configure(noise_multiplier=1.0, sample_rate=0.01,
                 expected_batch_size=batch, ledger=PrivacyLedger(1e-5))

    def private_step(inputs, samples):
        with ow.optim_context(model):
            loss = loss_of(inputs, samples)
        ow.update_params(loss)
        ow.private_step()
    return private_step


def rss_kib() -> int:
    """Current resident set size of this process in KiB (Linux)."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f
                    if line.startswith('VmRSS:'))


def measure(args: argparse.Namespace) -> Dict:
    """Build the model, run 1 warm-up and ``--steps`` timed steps."""
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    cuda = args.device.startswith('cuda')
    cfg, model = build_model(args.config, args.device)
    size = args.input_size or list(cfg.model.head.decoder.input_size)
    out = dict(mode=args.mode, model=model_name(cfg), input_size=size,
               params=sum(p.numel() for p in model.parameters()
                          if p.requires_grad), rss_build_kib=rss_kib())
    if cuda:
        out['cuda_build_bytes'] = torch.cuda.memory_allocated()
    step = step_fn(model, args.mode, args.batch_size)
    inputs, samples = make_batch(cfg, args.batch_size, size, args.device)
    times = []
    for i in range(args.steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(inputs, samples)
        if cuda:
            torch.cuda.synchronize()
        if i > 0:  # step 0 is the warm-up
            times.append(time.perf_counter() - start)
    out.update(times=times, median_s=statistics.median(times),
               peak_rss_kib=resource.getrusage(
                   resource.RUSAGE_SELF).ru_maxrss)
    if cuda:
        out['cuda_peak_bytes'] = torch.cuda.max_memory_allocated()
    return out


def run_mode(argv: Sequence[str], mode: str) -> Dict:
    """Measure ``mode`` in a fresh subprocess and return its JSON result."""
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--mode', mode,
           '--json']
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{mode} run failed:\n{proc.stderr[-3000:]}')
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')][-1]
    return json.loads(line)


def machine(device: str) -> Dict[str, str]:
    """CPU model, cores, RAM, torch version and the device, as strings."""
    import torch
    cpu = platform.processor() or 'unknown'
    with open('/proc/cpuinfo') as f:
        cpu = next((ln.split(':', 1)[1].strip() for ln in f
                    if ln.startswith('model name')), cpu)
    with open('/proc/meminfo') as f:
        mem_kib = int(f.readline().split()[1])
    dev = 'CPU'
    if device.startswith('cuda'):
        dev = f'CUDA ({torch.cuda.get_device_name(torch.device(device))})'
    return dict(cpu=cpu, cores=str(os.cpu_count()), torch=torch.__version__,
                ram=f'{mem_kib / 2**20:.1f} GiB', device=dev)


def gib(kib: float) -> float:
    """KiB to GiB."""
    return kib / 2**20


def render(args, argv: Sequence[str], res: Dict[str, Dict]) -> str:
    """The markdown section for one config on one device."""
    m = machine(args.device)
    r, n = res['private'], res['nonprivate']
    w, h = r['input_size']
    cfg_name = osp.splitext(osp.basename(args.config))[0]
    cmd = ' '.join(['python tools/benchmark_dp_step.py',
                    *map(shlex.quote, argv)])
    rows = [('Time per step (s, median of '
             f"{len(r['times'])})", n['median_s'], r['median_s'], '.2f'),
            ('Peak RSS (GiB)', gib(n['peak_rss_kib']),
             gib(r['peak_rss_kib']), '.2f'),
            ('RSS growth after model build (GiB)',
             gib(n['peak_rss_kib'] - n['rss_build_kib']),
             gib(r['peak_rss_kib'] - r['rss_build_kib']), '.2f')]
    if 'cuda_peak_bytes' in r:
        rows.append(('Peak CUDA allocated (GiB)', n['cuda_peak_bytes'] / 2**30,
                     r['cuda_peak_bytes'] / 2**30, '.2f'))
    lines = [f"## {cfg_name} on {m['device']}", '',
             f'- Command: `{cmd}`',
             f'- Date: {datetime.date.today().isoformat()}',
             f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; "
             f"torch {m['torch']}; device {m['device']}",
             f"- Model: {r['model']} (`{cfg_name}.py`), "
             f"{r['params']:,} trainable parameters",
             f'- Batch size {args.batch_size}, input {w}x{h}; '
             'non-private: AdamW; DP: DPOptimWrapper (C=0.1, sigma=1.0, '
             'per-sample clipping + noise) + AdamW',
             '', '| | non-private | DP-SGD | DP / non-private |',
             '|---|---:|---:|---:|']
    for label, a, b, fmt in rows:
        ratio = f'{b / a:.2f}x' if a > 0 else 'n/a'
        lines.append(f'| {label} | {a:{fmt}} | {b:{fmt}} | {ratio} |')
    return '\n'.join(lines) + '\n'


def write_section(path: str, section: str) -> None:
    """Replace the section with the same heading in ``path`` or append."""
    text = open(path).read() if osp.exists(path) else TITLE + '\n'
    heading = section.splitlines()[0]
    parts = ('\n' + text).split('\n## ')
    head, sections = parts[0], ['## ' + s for s in parts[1:]]
    sections = [s.rstrip('\n') + '\n' for s in sections]
    kept = [s if s.splitlines()[0] != heading else section for s in sections]
    if heading not in (s.splitlines()[0] for s in sections):
        kept.append(section)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join([head.rstrip('\n') + '\n', *kept]))


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    """Measure one mode (``--mode``) or both, then report and write."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.mode:
        res = measure(args)
        print(json.dumps(res) if args.json else res, flush=True)
        return {args.mode: res}
    child = [*argv, '--device', args.device]
    res = {mode: run_mode(child, mode) for mode in MODES}
    r, n = res['private'], res['nonprivate']
    print(f"non-private: {n['median_s']:.3f} s/step, peak RSS "
          f"{gib(n['peak_rss_kib']):.2f} GiB")
    print(f"DP-SGD:      {r['median_s']:.3f} s/step, peak RSS "
          f"{gib(r['peak_rss_kib']):.2f} GiB")
    print(f"ratio DP/non-private: time {r['median_s'] / n['median_s']:.2f}x,"
          f" peak RSS {r['peak_rss_kib'] / n['peak_rss_kib']:.2f}x")
    write_section(args.out, render(args, argv, res))
    print(f'results written to {args.out}')
    return res


if __name__ == '__main__':
    main()
