"""Count the aten ops a DP step dispatches against a non-private step.

Every op that reaches the dispatcher is counted (a ``TorchDispatchMode``)
except metadata-only ones (views, permutes, detach, expand, ...), which
launch no kernel; counted per phase: the micro-batch (forward, backward
with the engine's per-layer work, norms, clipped sum) and the step (noise,
scaling, optimizer), after one warm-up step (the first step's checks are
not counted). ``fast`` is the CPU's path of the fast engine (per-sample
gradients written into stacked rows during the backward), ``fast-gpu`` the
GPU's (stacked after it, the layer norms' per-sample products batched,
the noise one generator call; fewer ops, more memory). Writes a markdown table per preset and batch size into
``--out`` (keeping other sections) and prints it; an engine that refuses
the model is a row with its reason.

    python tools/count_step_ops.py --preset gn-hrnet-w32 --batch-size 4
    python tools/count_step_ops.py --engines fast fast-gpu  # both fast paths
    python tools/count_step_ops.py --preset tiny --batch-size 4 --out /tmp/o.md
"""
import argparse
import collections
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_dp_step import (PRESETS, _private_wrapper,  # noqa: E402
                               build_model, make_batch, write_section)

#: Ops that only change metadata (no kernel launch).
METADATA = {
    'view', '_unsafe_view', 'reshape', 'permute', 'transpose', 't',
    'detach', 'expand', 'as_strided', 'alias', 'unsqueeze', 'squeeze',
    'select', 'slice', 'split', 'split_with_sizes', 'unbind', 'narrow',
    'view_as', 'expand_as', 'lift_fresh', 'unflatten', 'flatten',
    'chunk', '_reshape_alias', 'diagonal', 'movedim', 'numpy_T'}


def counter():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in METADATA:
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    return Count


def count(preset: str, mode: str, batch: int) -> Dict[str, collections.Counter]:
    """``{phase: Counter(op -> count)}`` of one step of ``mode``."""
    import torch
    from mmpose_dp.privacy import noise
    torch.manual_seed(0)
    config, size, privacy, _ = PRESETS[preset]
    cfg, model = build_model(config, 'cpu',
                             None if mode == 'nonprivate' else privacy)
    inputs, samples = make_batch(cfg, batch, size, 'cpu')
    # The same foreach AdamW in both (torch's CPU default is the for-loop).
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3,
        foreach=True)
    if mode == 'nonprivate':
        def first():
            optimizer.zero_grad(set_to_none=True)
            model.parse_losses(model.loss(inputs, samples))[0].backward()

        second = optimizer.step
    else:
        ow = _private_wrapper(model, optimizer, mode.split('-')[0], batch)
        if mode == 'fast-gpu':  # the GPU's path: stacked after the
            # backward, layer norms' products batched, the noise one call
            ow.engine.stack_rows = False
            ow.engine.batched_products = True
            noise_pieces = noise.CPU_PIECE
            noise.CPU_PIECE = 1 << 62
        data = dict(inputs=inputs, data_samples=samples)

        def first():
            ow.private_micro_batch(model, data, list(range(batch)))

        second = ow.private_step
    try:
        first(), second()  # warm-up: first-step checks, optimizer state
        phases = {}
        Count = counter()
        for name, fn in (('micro-batch', first), ('step', second)):
            with Count() as c:
                fn()
            phases[name] = c.ops
    finally:
        if mode == 'fast-gpu':
            noise.CPU_PIECE = noise_pieces
    return phases


def render(preset: str, batch: int, res: Dict[str, Dict], argv) -> str:
    base = sum(sum(c.values()) for c in res['nonprivate'].values())
    lines = [f'## Ops per step: {preset}, batch {batch}', '',
             f"`python tools/count_step_ops.py {' '.join(argv)}`", '',
             '| mode | micro-batch | step | total | vs non-private | top ops |',
             '|---|---:|---:|---:|---:|---|']
    for mode, phases in res.items():
        if isinstance(phases, str):  # the engine refused the model
            lines.append(f'| {mode} | refused | | | | {phases[:160]} |')
            continue
        total = sum(sum(c.values()) for c in phases.values())
        top = sum(phases.values(), collections.Counter()).most_common(6)
        lines.append(
            f"| {mode} | {sum(phases['micro-batch'].values())} | "
            f"{sum(phases['step'].values())} | {total} | "
            f'{total / base:.2f}x | '
            + ', '.join(f'{k} {v}' for k, v in top) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', default='gn-hrnet-w32', choices=PRESETS)
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--engines', nargs='+', default=['fast', 'hooks'])
    p.add_argument('--out', help='markdown file to write the table into')
    args = p.parse_args(argv)
    res = {}
    for mode in ['nonprivate'] + args.engines:
        try:
            res[mode] = count(args.preset, mode, args.batch_size)
        except Exception as err:  # noqa: BLE001 (a refusal is a row)
            if mode == 'nonprivate':
                raise
            res[mode] = f'{type(err).__name__}: {err}'.replace('|', '/')
    text = render(args.preset, args.batch_size, res, argv)
    print(text)
    if args.out:
        write_section(args.out, text)
    return res


if __name__ == '__main__':
    main()
