"""An engine is trusted only after it matched an independent reference.

Before its first private micro-batch, every clipping engine computes clipped
sums on a *probe* batch: three samples with the structure of the real
micro-batch (shapes, dtypes, label fields) and random contents, units
``[1, 0, 0]`` (labels not sorted, one unit of two samples). The reference
is plain autograd on each sample alone, never through the engine: the
gradient of a batch of two copies of the sample (a batch of one would hit
torch's wrong backward through MMPretrain's TinyViT at B = 1), summed per
unit, then clipped. The engine must match it at two clipping norms, one
that clips every unit and one that clips none, to ``rtol`` (relative, over
all trainable parameters).

What a mismatch catches: a forward that mixes samples (the two copies see
only themselves), layers whose forward differs from the rule an engine
applies (subclasses, weights used through ``F.*``, tied weights), target
fields split wrongly, wrong loss rescaling. Dropout-like modules are in
eval mode during the check, so that both sides see the same function.
The probe holds no private value, so neither the check's outcome nor its
message depends on private data.
"""
import contextlib
from typing import List

import torch

from .. import clipping
from ..errors import NotPrivateError
from .heap import returned_to_os

#: The probe's privacy units (sample i belongs to unit PROBE_UNITS[i]).
PROBE_UNITS = [1, 0, 0]
#: Largest relative difference accepted between engine and reference; the
#: check runs in float64 (round-off of deep float32 nets alone reaches
#: 1e-3), or, for a model with ops that have no float64 kernel, in its own
#: precision with the looser bound.
RTOL = 1e-6
RTOL_OWN_PRECISION = 1e-2
#: Seed of the probe's random contents (public: the probe is no secret).
PROBE_SEED = 20250410


@contextlib.contextmanager
def without_dropout(model: torch.nn.Module):
    """Dropout, DropPath, DropBlock... in eval mode for the block."""
    switched = [m for m in model.modules()
                if 'Drop' in type(m).__name__ and m.training]
    for m in switched:
        m.training = False
    try:
        yield
    finally:
        for m in switched:
            m.training = True


def reference_unit_gradients(engine, probe, units: List[int]
                             ) -> List[List[torch.Tensor]]:
    """Per unit, the sum of its samples' gradients over ``engine.params``,
    each from plain autograd on a batch of two copies of the sample."""
    scale = 1.0 if engine.loss_reduction == 'mean' else 0.5
    per_unit = {}
    for i, unit in enumerate(units):
        pair = engine.batch_loss.select(probe, [i, i])
        with torch.enable_grad():
            loss = engine.batch_loss.loss(engine.model, pair)
            grads = torch.autograd.grad(loss, engine.params,
                                        allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() * scale
                 for p, g in zip(engine.params, grads)]
        if unit in per_unit:
            per_unit[unit] = [a + b for a, b in zip(per_unit[unit], grads)]
        else:
            per_unit[unit] = grads
    return [per_unit[u] for u in sorted(per_unit)]


def _relative_error(got: List[torch.Tensor], units: List[List[torch.Tensor]],
                    factors: torch.Tensor) -> float:
    """Relative distance of ``got`` to ``sum_u factors[u] * units[u]``, one
    parameter at a time (the reference sum is never held whole: at the
    first step, the check's buffers set the run's peak memory)."""
    diff2 = size2 = 0.0
    for j, g in enumerate(got):
        w = sum(float(f) * unit[j].double() for f, unit in zip(factors, units))
        diff2 += float((g.double() - w).pow(2).sum())
        size2 += float(w.pow(2).sum())
    diff, size = diff2**0.5, size2**0.5
    return diff / max(size, 1e-30) if size > 0 else diff


@contextlib.contextmanager
def in_float64(model: torch.nn.Module):
    """The model's floating parameters and buffers in float64 for the
    block (the same Parameter objects, so engines keep theirs), then
    exactly back."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers())
               if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    for t in tensors:
        t.data = t.data.double()
    try:
        yield
    finally:
        for t, dtype in zip(tensors, dtypes):
            t.data = t.data.to(dtype)


def verify_engine(engine, batch) -> float:
    """Check ``engine`` on a probe shaped like ``batch``; returns the
    largest relative error, or raises :class:`NotPrivateError`."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    probe = engine.batch_loss.probe(batch, len(PROBE_UNITS), generator)
    # Its float64 buffers would otherwise stay resident for the whole run.
    with returned_to_os():
        try:
            with in_float64(engine.model):
                return _compare(engine, engine.batch_loss.to_float64(probe),
                                RTOL)
        except NotPrivateError:
            raise
        except (RuntimeError, TypeError, NotImplementedError):
            # e.g. a compiled op without a float64 kernel
            return _compare(engine, probe, RTOL_OWN_PRECISION)


def _compare(engine, probe, rtol: float) -> float:
    worst = 0.0
    with without_dropout(engine.model):
        units = reference_unit_gradients(engine, probe, PROBE_UNITS)
        norms = torch.stack([clipping.per_sample_norms(
            [g.unsqueeze(0) for g in unit])[0] for unit in units])
        positive = norms[norms > 0]
        bounds = ([0.5 * float(positive.min())] if len(positive) else [])
        bounds.append(2.0 * float(norms.max()) + 1.0)
        for max_grad_norm in bounds:
            factors = (max_grad_norm / (norms + clipping.NORM_EPS)).clamp(
                max=1.0)
            got, _ = engine._clipped_sum(probe, list(PROBE_UNITS),
                                         max_grad_norm)
            error = _relative_error(got, units, factors)
            del got
            worst = max(worst, error)
            if not error <= rtol:
                clipped = 'every unit clipped' if factors.max() < 1 else \
                    'no unit clipped'
                raise NotPrivateError(
                    f'the {engine.name!r} clipping engine does not compute '
                    'this model\'s clipped per-unit gradients: on a random '
                    f'probe batch ({clipped}) its sum differs from '
                    f'per-sample autograd by {error:.3g} (relative; at most '
                    f'{rtol} allowed). Likely a layer whose forward differs '
                    'from the rule the engine applies (a subclass, a weight '
                    'used through torch.nn.functional, a tied weight), or a '
                    'forward or loss that mixes the samples of a batch. '
                    "Use privacy.engine='vmap' (each sample alone) or "
                    "'auto'")
    return worst
