"""Time and memory of a DP step for every clipping engine against a
non-private step on the same model and batch.

Each measurement runs in a fresh subprocess (this script with ``--measure
... --json``) so that its peak memory is its own: peak RSS on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU. The parent writes one markdown
section per model preset, batch size and device into ``--out`` (keeping the
other sections) with the ratios to the non-private step and, for the
``fast`` engine, where the time goes (forward, backward with the per-layer
work, norms, clipped sum). ``--shipped CONFIG`` measures a ready PDP or
hybrid config as shipped (its batch, micro-batch, engine, projection
storage; public set of its size; refresh included in the first step).

Examples:
    python tools/benchmark_dp_step.py --preset gn-hrnet-w32 --batch-size 8
    python tools/benchmark_dp_step.py --preset vitpose-small \\
        --engines fast hooks vmap auto
    python tools/benchmark_dp_step.py --shipped configs/pdp_hrnet_mpii.py
    python tools/benchmark_dp_step.py --preset tiny --steps 1 --out /tmp/b.md
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MMPOSE = 'mmpose::body_2d_keypoint/topdown_heatmap/'
#: name -> (config, input size (W, H), privacy settings of the DP model,
#: description)
PRESETS = {
    'gn-hrnet-w32': ('configs/dp_hrnet_mpii.py', (256, 256), {},
                     'HRNet-W32, GroupNorm, heatmaps'),
    'hrnet-w32-bn-frozen': (
        MMPOSE + 'mpii/td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py',
        (256, 256), dict(batch_norm='freeze'),
        'stock HRNet-W32 (BatchNorm; frozen for DP)'),
    'hrnet-w32-partial': (
        MMPOSE + 'mpii/td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py',
        (256, 256), dict(batch_norm='freeze', trainable=dict(
            params=[r'^backbone\.transition3\.', r'^backbone\.stage4\.',
                    r'^head\.'], norm_layers=True)),
        'stock HRNet-W32, BatchNorm frozen, last stage + norms + head '
        'trainable (the paper\'s partial fine-tuning)'),
    'vitpose-small': (
        MMPOSE + 'coco/td-hm_ViTPose-small_8xb64-210e_coco-256x192.py',
        (192, 256), dict(batch_norm='freeze'),
        'ViTPose-small (MMPretrain ViT, head BatchNorm frozen)'),
    'tinyvit-simcc': (
        'configs/dp_tinyvit_simcc_mpii.py', (192, 256),
        dict(batch_norm='freeze', trainable=dict(
            params=[r'^backbone\.stages\.3\.', r'^backbone\.norm3\.',
                    r'^head\.'], norm_layers=True)),
        "the paper's TinyViT-5M + SimCC head, its partial fine-tuning"),
    'tiny': ('configs/synthetic/tiny_hrnet_synthetic.py', (64, 64), {},
             'tiny HRNet (8/16/32/64), GroupNorm'),
}
#: Engines, and 'fast-graphs': the fast engine's micro-batch recorded once
#: and replayed (privacy.cuda_graphs; a CUDA graph on a GPU, the eager
#: form on a CPU).
ENGINES = ('fast', 'hooks', 'vmap', 'auto', 'fast-graphs')
#: Untimed steps before the timed ones: the first is the engine's
#: verification; a replayed mode records on the second and checks two
#: replays against eager runs.
WARMUP = {'fast-graphs': 4}
TITLE = ('# Benchmarks\n\nWritten by `tools/benchmark_dp_step.py` (time and '
         'memory of a step) and `tools/benchmark_accounting.py` (privacy '
         'accounting).')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', choices=sorted(PRESETS),
                   default='gn-hrnet-w32')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--engines', nargs='+', choices=ENGINES,
                   default=list(ENGINES[:4]))
    p.add_argument('--shipped', help='a ready PDP/hybrid config, as shipped')
    p.add_argument('--steps', type=int, default=3, help='timed steps')
    p.add_argument('--device', help='default: cuda if available, else cpu')
    p.add_argument('--threads', type=int, default=os.cpu_count() or 1,
                   help='torch CPU threads (default: all cores)')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'reports',
                                             'benchmarks.md'))
    p.add_argument('--measure', help='internal: measure this mode only')
    p.add_argument('--json', action='store_true', help='internal')
    return p.parse_args(argv)


# -- one measurement ----------------------------------------------------------
def build_model(config: str, device: str, privacy: Optional[Dict] = None):
    """The config and its model in train mode; with ``privacy``, prepared
    as a DP run prepares it (BatchNorm, trainable parameters)."""
    import mmpose_dp  # noqa: F401  (registers the project's components)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS
    path = config if osp.isabs(config) or config.startswith('mmpose::') \
        else osp.join(ROOT, config)
    if path.startswith('mmpose::'):
        import mmpose
        path = osp.join(osp.dirname(mmpose.__file__), '.mim', 'configs',
                        path[len('mmpose::'):])
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # offline; weights do not matter
    init_default_scope('mmpose')
    model = MODELS.build(cfg.model)
    if privacy is not None:
        from mmpose_dp.engine.model_preparation import prepare_private_model
        prepare_private_model(model, dict(privacy), cfg.model, None, False,
                              None)
    return cfg, model.to(device).train()


def make_batch(cfg, batch: int, size: Sequence[int], device: str):
    """Random images and heatmap targets ([K, H/4, W/4]), or SimCC label
    distributions for a SimCC head, for ``batch`` samples at input
    ``size`` (W, H)."""
    import torch
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    k, (w, h) = cfg.model.head.out_channels, size
    split = cfg.model.head.get('simcc_split_ratio')
    samples = []
    for _ in range(batch):
        s = PoseDataSample()
        labels = dict(keypoint_weights=torch.ones(1, k, device=device))
        if split:  # SimCC: x and y label distributions
            labels.update(
                keypoint_x_labels=torch.rand(1, k, int(w * split),
                                             device=device),
                keypoint_y_labels=torch.rand(1, k, int(h * split),
                                             device=device))
        else:
            s.gt_fields = PixelData(
                heatmaps=torch.rand(k, h // 4, w // 4, device=device))
        s.gt_instance_labels = InstanceData(**labels)
        samples.append(s)
    return torch.randn(batch, 3, h, w, device=device), samples


def raw_samples(cfg, n: int, size: Sequence[int]) -> List[dict]:
    """``n`` uncollated samples (uint8 image + targets), as a pipeline gives
    them to ``pseudo_collate``."""
    import torch
    _, samples = make_batch(cfg, n, size, 'cpu')
    w, h = size
    return [dict(inputs=torch.randint(0, 256, (3, h, w), dtype=torch.uint8),
                 data_samples=s) for s in samples]


def _private_wrapper(model, optimizer, engine: str, batch: int):
    from mmpose_dp.engine import DPOptimWrapper
    from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
    from mmpose_dp.models import detect_loss_reduction
    from mmpose_dp.privacy import PrivacyLedger

    class Preprocessed(MMEngineBatchLoss):
        def prepare(self, model, batch):  # random inputs, preprocessed
            return batch

    ow = DPOptimWrapper(optimizer, max_grad_norm=0.1, noise_seed=0,
                        engine=engine)
    ow.setup(model, detect_loss_reduction(model), noise_multiplier=1.0,
             sample_rate=0.01, expected_batch_size=batch,
             ledger=PrivacyLedger(1e-5), batch_loss=Preprocessed())
    return ow


def measure(args: argparse.Namespace) -> Dict[str, Any]:
    """One warm-up and ``args.steps`` timed steps of ``args.measure``
    (``nonprivate``, an engine name, or ``shipped``)."""
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    mode = args.measure
    out: Dict[str, Any] = dict(mode=mode)
    ow = None
    if mode == 'shipped':
        step, info = _shipped_step(args)
        out.update(info)
    else:
        config, size, privacy, _ = PRESETS[args.preset]
        cfg, model = build_model(config, args.device,
                                 None if mode == 'nonprivate' else privacy)
        out['trainable'] = sum(p.numel() for p in model.parameters()
                               if p.requires_grad)
        inputs, samples = make_batch(cfg, args.batch_size, size,
                                     args.device)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-3)
        if mode == 'nonprivate':
            def step():
                optimizer.zero_grad(set_to_none=True)
                model.parse_losses(model.loss(inputs, samples))[0].backward()
                optimizer.step()
        else:
            ow = _private_wrapper(model, optimizer, mode.split('-')[0],
                                  args.batch_size)
            if mode == 'fast-graphs':
                from mmpose_dp.engine.loops import RECORDERS
                from mmpose_dp.privacy.engines.graphed import (
                    EagerRecorder, GraphedClippedSum)
                recorder = RECORDERS.get(args.device.split(':')[0],
                                         EagerRecorder)
                ow.graphed = GraphedClippedSum(ow.engine, recorder(),
                                               strict=True)
            engine = getattr(ow.engine, 'chosen', None) or ow.engine
            batch = dict(inputs=inputs, data_samples=samples)

            def step():
                ow.private_micro_batch(model, batch,
                                       list(range(args.batch_size)))
                ow.private_step()
    out['rss_build_kib'] = status_kib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    warmup = WARMUP.get(mode, 1)
    for i in range(args.steps + warmup):  # the first ones warm up
        if i == warmup and mode not in ('nonprivate', 'shipped'):
            engine = getattr(ow.engine, 'chosen', None) or ow.engine
            if hasattr(engine, 'timings'):
                engine.timings.clear()
                engine.synchronize = sync
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if mode not in ('nonprivate', 'shipped'):
        out['engine'] = engine.name
        if getattr(engine, 'timings', None):
            out['breakdown'] = {k: v / args.steps
                                for k, v in engine.timings.items()}
    if ow is not None and ow.graphed is not None:
        out['graphed'] = dict(ow.graphed.counts, reason=ow.graphed.reason)
    out.update(first_step_s=times[0], times=times[warmup:],
               median_s=statistics.median(times[warmup:]),
               load=os.getloadavg()[0],
               peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if cuda:
        out['cuda_peak_bytes'] = torch.cuda.max_memory_allocated()
    return out


def _shipped_step(args):
    """A step of a ready PDP/hybrid config as shipped: its batch, its
    micro-batches, its engine, its public set size and projection storage,
    random data; the first (warm-up) step includes the PDP refresh."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmpose_dp.engine.loops import split_batch
    from mmpose_dp.engine.stages import ProjectionStage, PublicFeatureStage
    cfg = Config.fromfile(osp.join(ROOT, args.shipped))
    privacy = dict(cfg.privacy)
    batch = cfg.train_dataloader.batch_size
    size = tuple(cfg.codec.input_size)
    _, model = build_model(args.shipped, args.device, privacy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ow = _private_wrapper(model, optimizer, privacy.get('engine', 'auto'),
                          batch)
    m = privacy['public_data']['num_samples']
    projection = dict(privacy['projection'])
    stages = [ProjectionStage(model, raw_samples(cfg, m, size), **projection)]
    if privacy.get('public_features'):
        stages.append(PublicFeatureStage(
            model, [pseudo_collate(raw_samples(cfg, batch, size))],
            weight=privacy['public_features']['weight']))
    ow.stages = stages
    inputs, samples = make_batch(cfg, batch, size, args.device)
    data = dict(inputs=list(inputs), data_samples=samples)
    micro = split_batch(data, list(range(batch)),
                        privacy.get('max_physical_batch_size'))

    def step():
        for part, units in micro:
            ow.private_micro_batch(
                model, dict(inputs=torch.stack(part['inputs']),
                            data_samples=part['data_samples']), units)
        ow.private_step()
    info = dict(batch=batch, micro_batch=privacy.get(
        'max_physical_batch_size'), public_samples=m,
                projection_dtype=projection.get('dtype', 'float32'),
                trainable=sum(p.numel() for p in ow.params))
    return step, info


#: Environment variables that choose or tune the C allocator, which sets
#: much of a CPU run's peak RSS (the preloaded library is inherited by the
#: runs a tool starts): a result names those it ran under.
ALLOCATOR_ENV = ('LD_PRELOAD', 'MALLOC_CONF', 'MALLOC_ARENA_MAX',
                 'GLIBC_TUNABLES')


def command(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces a result: the allocator settings it ran
    under, then ``python script argv``."""
    env = [f'{k}={shlex.quote(os.environ[k])}' for k in ALLOCATOR_ENV
           if os.environ.get(k)]
    return ' '.join(env + [shlex.join(['python', script, *argv])])


def allocator_suffix() -> str:
    """``', jemalloc'`` (a heading's suffix) under a preloaded malloc
    library (``LD_PRELOAD``), ``''`` under the C library's own."""
    for path in os.environ.get('LD_PRELOAD', '').replace(':', ' ').split():
        name = osp.basename(path).split('.')[0]
        if 'malloc' in name:
            return ', ' + (name[3:] if name.startswith('lib') else name)
    return ''


def status_kib(field: str = 'VmRSS') -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), KiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


# -- the report -------------------------------------------------------------
def run_mode(argv: Sequence[str], mode: str) -> Dict[str, Any]:
    """:func:`measure` of ``mode`` in a fresh Python; its JSON result (or
    the error)."""
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--measure', mode,
           '--json']
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return dict(mode=mode, error=last[-1] if last else 'failed')
    return json.loads([ln for ln in proc.stdout.splitlines()
                       if ln.startswith('{')][-1])


def machine(device: str) -> Dict[str, str]:
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


def _memory(d: Dict[str, Any]) -> Tuple[str, float]:
    if 'cuda_peak_bytes' in d:
        return 'peak CUDA allocated (GiB)', d['cuda_peak_bytes'] / 2**30
    return 'peak RSS (GiB)', d['peak_rss_kib'] / 2**20


def table(res: Dict[str, Dict[str, Any]]) -> List[str]:
    base = res['nonprivate']
    label, base_mem = _memory(base)
    lines = [f'| step | engine used | s/step (median) | {label} | time / '
             'non-private | memory / non-private | fast: forward / '
             'backward / norms / clipped sum (s) |',
             '|---|---|---:|---:|---:|---:|---|']
    for mode, d in res.items():
        if 'error' in d:
            lines.append(f'| {mode} | refused | | | | | {d["error"][:160]} |')
            continue
        mem = _memory(d)[1]
        parts = d.get('breakdown')
        split = ' / '.join(f"{parts.get(k, 0):.3f}" for k in (
            'forward', 'backward', 'norms', 'clipped_sum')) if parts else ''
        lines.append(
            f"| {mode} | {d.get('engine', '')} | {d['median_s']:.3f} | "
            f"{mem:.2f} | {d['median_s'] / base['median_s']:.2f}x | "
            f'{mem / base_mem:.2f}x | {split} |')
    return lines


def render(args, argv, res) -> str:
    m = machine(args.device)
    _, (w, h), privacy, description = PRESETS[args.preset]
    cmd = command('tools/benchmark_dp_step.py', argv)
    trainable = next((d['trainable'] for m, d in res.items()
                      if m != 'nonprivate' and 'trainable' in d),
                     res['nonprivate'].get('trainable', 0))
    return '\n'.join([
        f"## {args.preset}, batch {args.batch_size} on {m['device']}"
        f'{allocator_suffix()}', '',
        f'- Command: `{cmd}`',
        f'- Date: {datetime.date.today().isoformat()}',
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; torch "
        f"{m['torch']}; {args.threads} torch threads; 1-min load "
        f'{args.load:.2f} at start',
        f'- Model: {description}, input {w}x{h}, {trainable:,} trainable '
        'parameters in the DP step; random images and heatmap targets',
        '- DP step: DPOptimWrapper (clip at C = 0.1, noise sigma = 1.0, '
        '/ B) + AdamW, one micro-batch; non-private: forward, backward, '
        'AdamW. Median of the timed steps after one warm-up (fast-graphs: '
        'four, the recording and two checked replays), each mode in its '
        'own process', '', *table(res)]) + '\n'


def render_shipped(args, argv, d) -> str:
    m = machine(args.device)
    label, mem = _memory(d)
    cmd = command('tools/benchmark_dp_step.py', argv)
    name = osp.splitext(osp.basename(args.shipped))[0]
    if 'error' in d:
        body = [f"Failed: {d['error']}"]
    else:
        body = [
            f"- Batch {d['batch']} in micro-batches of {d['micro_batch']}, "
            f"{d['trainable']:,} trainable parameters, {d['public_samples']}"
            f" public samples (G in {d['projection_dtype']})", '',
            '| first step (with the PDP refresh, s) | step (s, median) | '
            f'{label} |', '|---:|---:|---:|',
            f"| {d['first_step_s']:.1f} | {d['median_s']:.2f} | "
            f'{mem:.2f} |']
    return '\n'.join([
        f"## {name} as shipped on {m['device']}", '', f'- Command: `{cmd}`',
        f'- Date: {datetime.date.today().isoformat()}',
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; torch "
        f"{m['torch']}", *body]) + '\n'


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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.measure:
        res = measure(args)
        print(json.dumps(res) if args.json else res, flush=True)
        return {args.measure: res}
    args.load = os.getloadavg()[0]  # other work skews CPU times
    child = [*argv, '--device', args.device]
    if args.shipped:
        res = {'shipped': run_mode(child, 'shipped')}
        write_section(args.out, render_shipped(args, argv, res['shipped']))
    else:
        res = {mode: run_mode(child, mode)
               for mode in ['nonprivate', *args.engines]}
        if 'error' in res['nonprivate']:
            raise RuntimeError(res['nonprivate']['error'])
        write_section(args.out, render(args, argv, res))
    for mode, d in res.items():
        print(mode, d.get('error') or f"{d['median_s']:.3f} s/step, "
              f"{_memory(d)[0]} {_memory(d)[1]:.2f}")
    print(f'results written to {args.out}')
    return res


if __name__ == '__main__':
    main()
