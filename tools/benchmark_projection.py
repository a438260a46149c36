"""What storing the public gradients G in half precision costs the PDP
projection: the relative error of V V^T g against float32 storage.

Builds a model preset of tools/benchmark_dp_step.py, computes the public
per-sample gradients of m random samples once (float32), stores G in
float32, bfloat16 and float16, and projects a DP-like gradient (a random
clipped-gradient sum plus Gaussian noise) with each; writes a section into
docs/reports/benchmarks.md.

    python tools/benchmark_projection.py --preset gn-hrnet-w32 --public 100
"""
import argparse
import datetime
import os.path as osp
import shlex
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_dp_step import (PRESETS, ROOT, build_model,  # noqa: E402
                               raw_samples, write_section)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', default='gn-hrnet-w32', choices=sorted(PRESETS))
    p.add_argument('--public', type=int, default=100, help='m')
    p.add_argument('--rank', type=int, help='k (default m)')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'reports',
                                             'benchmarks.md'))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    from mmpose_dp.engine.stages import public_per_sample_gradients
    from mmpose_dp.privacy import PublicSubspace
    torch.manual_seed(0)
    config, size, privacy, description = PRESETS[args.preset]
    cfg, model = build_model(config, 'cpu', privacy)
    params = [q for q in model.parameters() if q.requires_grad]
    G = public_per_sample_gradients(model, raw_samples(cfg, args.public,
                                                       size),
                                    params, torch.float32)
    k = args.rank or args.public
    # A DP-like gradient: 32 clipped samples in the public span plus noise.
    g = torch.randn(32, args.public).sum(0) @ G  # sum of 32 in the span
    g = g / g.norm() * 32 * 0.1 + torch.randn(G.shape[1]) * 0.1
    full = PublicSubspace(G, k)
    reference, full_rank = full.project_flat(g), full.rank
    del full
    rows = []
    for name, dtype in (('bfloat16', torch.bfloat16),
                        ('float16', torch.float16)):
        sub = PublicSubspace(G.to(dtype), k)
        err = float((sub.project_flat(g) - reference).norm() /
                    reference.norm())
        rows.append(f'| {name} | {G.numel() * 2 / 2**30:.2f}'
                    f' | {err:.2e} | {sub.rank} |')
        del sub  # one half-precision copy of G at a time
    cmd = shlex.join(['python', 'tools/benchmark_projection.py', *argv])
    section = '\n'.join([
        f'## Projection storage, {args.preset}, m = {args.public}', '',
        f'- Command: `{cmd}`', f'- Date: {datetime.date.today().isoformat()}',
        f'- Model: {description}, {G.shape[1]:,} trainable parameters; G from '
        f'{args.public} random public samples; rank k = {k}; g = 32 clipped '
        'gradients in the public span (C = 0.1) + N(0, 0.1^2) per '
        'coordinate', '',
        '| G stored in | G size (GiB) | relative error of V V^T g vs '
        'float32 | rank used |', '|---|---:|---:|---:|',
        f'| float32 | {G.numel() * 4 / 2**30:.2f} | 0 (reference) | '
        f'{full_rank} |', *rows]) + '\n'
    write_section(args.out, section)
    print(section)


if __name__ == '__main__':
    main()
