"""Check that replayed DP steps (privacy.cuda_graphs) equal eager ones.

Builds a preset model twice from one seed and takes ``--steps`` DP steps
with each copy: eagerly, and with the fast engine's micro-batch recorded
once and replayed (a CUDA graph on a GPU; on a CPU the eager form of the
same path, which must match bit for bit). Both see the same random
micro-batches of exactly ``--physical-batch-size`` samples (new data every
step, some padded with the public dummy), sigma = 0 and a fixed test key,
so the parameters after every step must agree. Writes a section into
``--out`` and exits non-zero on a mismatch.

    python tools/check_cuda_graphs.py --preset gn-hrnet-w32 \\
        --physical-batch-size 32 --steps 6
    python tools/check_cuda_graphs.py --preset tiny --device cpu --out /tmp/c.md
"""
import argparse
import datetime
import os.path as osp
import shlex
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_dp_step import (PRESETS, ROOT, build_model,  # noqa: E402
                               make_batch, write_section)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', choices=sorted(PRESETS), default='tiny')
    p.add_argument('--physical-batch-size', type=int, default=8)
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--device', help='default: cuda if available, else cpu')
    p.add_argument('--tolerance', type=float, default=1e-5,
                   help='largest relative parameter difference accepted on '
                   'a GPU (a CPU must match exactly)')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'reports',
                                             'benchmarks.md'))
    return p.parse_args(argv)


def micro_batches(cfg, size, steps, physical, device):
    """One micro-batch per step: ``physical - (step % 3)`` random samples
    and public-dummy padding up to ``physical``."""
    from mmpose_dp.engine.static_batches import zero_element
    out = []
    for step in range(steps):
        real = max(1, physical - step % 3)
        inputs, samples = make_batch(cfg, real, size, device)
        padded = physical - real
        inputs = torch.cat([inputs, inputs.new_zeros(
            (padded, ) + inputs.shape[1:])])
        samples = samples + [zero_element(samples[0])
                             for _ in range(padded)]
        out.append((dict(inputs=inputs, data_samples=samples), padded))
    return out


def train(args, graphed: bool):
    from mmpose_dp.engine import DPOptimWrapper
    from mmpose_dp.engine.loops import RECORDERS
    from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
    from mmpose_dp.models import detect_loss_reduction
    from mmpose_dp.privacy import PrivacyLedger
    from mmpose_dp.privacy.engines.graphed import (EagerRecorder,
                                                   GraphedClippedSum)

    class Preprocessed(MMEngineBatchLoss):
        def prepare(self, model, batch):  # random inputs, preprocessed
            return batch

    config, size, privacy, _ = PRESETS[args.preset]
    torch.manual_seed(0)
    cfg, model = build_model(config, args.device, privacy)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ow = DPOptimWrapper(optimizer, max_grad_norm=0.1, noise_seed=0,
                        engine='fast')
    P = args.physical_batch_size
    ow.setup(model, detect_loss_reduction(model), noise_multiplier=0.0,
             sample_rate=0.01, expected_batch_size=P,
             ledger=PrivacyLedger(1e-5), batch_loss=Preprocessed())
    if graphed:
        recorder = RECORDERS.get(args.device.split(':')[0], EagerRecorder)
        ow.graphed = GraphedClippedSum(ow.engine, recorder(), strict=True)
    torch.manual_seed(1)  # the same data for both runs
    states = []
    for batch, padded in micro_batches(cfg, size, args.steps, P,
                                       args.device):
        ow.private_micro_batch(model, batch, list(range(P)), padded)
        ow.private_step()
        states.append([p.detach().clone() for p in ow.params])
    return states, (ow.graphed.counts if graphed else None)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.device = args.device or ('cuda' if torch.cuda.is_available()
                                  else 'cpu')
    eager, _ = train(args, graphed=False)
    replayed, counts = train(args, graphed=True)
    worst = []
    for a, b in zip(eager, replayed):
        worst.append(max(float((x.double() - y.double()).abs().max() /
                               x.double().abs().max().clamp(min=1e-30))
                         for x, y in zip(a, b)))
    exact = args.device == 'cpu'
    ok = all(w == 0 for w in worst) if exact else \
        all(w <= args.tolerance for w in worst)
    device = 'CPU (the eager form)' if exact else \
        f'CUDA ({torch.cuda.get_device_name(torch.device(args.device))})'
    section = '\n'.join([
        f'## Replayed steps equal eager ones: {args.preset}, physical batch '
        f'{args.physical_batch_size} on {device}', '',
        '- Command: `' + shlex.join(['python', 'tools/check_cuda_graphs.py',
                                     *argv]) + '`',
        f'- Date: {datetime.date.today().isoformat()}; torch '
        f'{torch.__version__}',
        f'- {args.steps} DP steps, sigma = 0, fixed test key, new random '
        'data every step, padded micro-batches; micro-batches by path: '
        f'{counts}',
        '- Largest relative parameter difference after each step: ' +
        ', '.join(f'{w:.2e}' for w in worst),
        f"- Result: {'PASS' if ok else 'FAIL'} (" +
        ('bit for bit' if exact else f'tolerance {args.tolerance:g}') + ')',
        ''])
    write_section(args.out, section)
    print(section)
    if not ok:
        sys.exit(1)


if __name__ == '__main__':
    main()
