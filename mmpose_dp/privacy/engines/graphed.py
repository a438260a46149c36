"""A clipping engine's micro-batch recorded once and replayed (CUDA graphs).

With ``privacy.physical_batch_size`` every micro-batch has one shape, so
the engine's whole clipped sum of a micro-batch (forward, backward with the
per-layer work, norms, clip factors times the padding mask, the sums) can
be recorded as one CUDA graph and replayed: each micro-batch is copied into
static input buffers, the graph rewrites static outputs, and the launch
cost of a few thousand small kernels becomes one. The noise, the reduction
over processes and the optimizer step stay outside (one flat noise draw
and foreach/fused kernels; the DDP all-reduce once per step).

A replay that read stale buffers would add one micro-batch's clipped
gradients to another's step, so nothing is trusted: the first micro-batch
runs eagerly (the engine's first-use verification), and the first
``verify_replays`` replays are compared with an eager run on the same
buffers; a mismatch turns the graph off (or, with ``strict``, refuses).
A micro-batch whose units are not one per sample, or whose non-tensor
fields differ from the recorded one's, runs eagerly.

The recording is a :class:`Recorder`: :class:`CudaGraphRecorder` on a GPU,
:class:`EagerRecorder` (the same buffers and calls, rerun at each replay)
on the CPU, where this module's logic is tested.
"""
from typing import Callable, List, Optional, Tuple

import torch

from ..errors import NotPrivateError
from .base import ClippingEngine, padding_mask

#: (clipped sums, loss): what a recorded micro-batch gives.
Outputs = Tuple[List[torch.Tensor], torch.Tensor]


class Recorder:
    """Records ``fn`` (no arguments, returns :data:`Outputs`) once;
    ``replay()`` then gives its outputs for what the buffers hold now."""

    def record(self, fn: Callable[[], Outputs]
               ) -> Tuple[Callable[[], Outputs], Outputs]:
        raise NotImplementedError


class EagerRecorder(Recorder):
    """No graph: each replay calls ``fn`` again on the static buffers (the
    eager form of the replayed path; CPU)."""

    def record(self, fn):
        return fn, fn()


class CudaGraphRecorder(Recorder):
    """``torch.cuda.CUDAGraph``: warm-up calls on a side stream, then one
    captured call; a replay rewrites the captured outputs in place."""

    def __init__(self, warmup: int = 2):
        self.warmup = warmup
        self.graph = None

    def record(self, fn):
        torch.cuda.synchronize()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fn()
        self.graph = graph

        def replay():
            graph.replay()
            return outputs

        return replay, outputs


def max_relative_difference(a: List[torch.Tensor],
                            b: List[torch.Tensor]) -> float:
    """``max |a - b| / max(|b|, tiny)`` over all tensors (float64)."""
    worst = 0.0
    for x, y in zip(a, b):
        diff = (x.double() - y.double()).abs().max()
        scale = y.double().abs().max().clamp(min=1e-30)
        worst = max(worst, float(diff / scale))
    return worst


class GraphedClippedSum:
    """``engine.clipped_sum`` of static-shape micro-batches, replayed.

    Args:
        engine: the clipping engine (already attached to the model).
        recorder: how the micro-batch is recorded (:class:`Recorder`).
        strict: raise instead of falling back to eager when the recording
            or its verification fails (``privacy.cuda_graphs=True``).
        verify_replays: replays compared with an eager run.
        tolerance: the largest relative difference accepted there.
        log: called with a message when the path changes (fallbacks).
    """

    def __init__(self, engine: ClippingEngine, recorder: Recorder,
                 strict: bool = False, verify_replays: int = 2,
                 tolerance: float = 1e-4,
                 log: Callable[[str], None] = print) -> None:
        self.engine = engine
        self.recorder = recorder
        self.strict = strict
        self.verify_replays = verify_replays
        self.tolerance = tolerance
        self.log = log
        #: Why replays are off for the rest of the run (None: on).
        self.reason: Optional[str] = None
        #: Micro-batches by path: eager, recorded, replayed.
        self.counts = dict(eager=0, recorded=0, replayed=0)
        self._eager_reasons = set()
        self._static: Optional[List[torch.Tensor]] = None
        self._mask: Optional[torch.Tensor] = None
        self._signature = None
        self._key = None
        self._replay: Optional[Callable[[], Outputs]] = None
        self._verified = 0

    @property
    def _concrete(self) -> ClippingEngine:
        """The engine that computes (``auto``'s choice, once made)."""
        return getattr(self.engine, 'chosen', None) or self.engine

    # -- the paths ----------------------------------------------------------
    def _eager(self, batch, units, max_grad_norm, padded,
               why: Optional[str] = None) -> Outputs:
        if why and why not in self._eager_reasons:
            self._eager_reasons.add(why)
            self.log(f'[privacy] cuda_graphs: a micro-batch ran eagerly: '
                     f'{why}')
        self.counts['eager'] += 1
        return self.engine.clipped_sum(batch, units, max_grad_norm, padded)

    def _turn_off(self, reason: str, error: Optional[BaseException] = None,
                  kind: type = RuntimeError):
        self.reason = reason
        self._replay = None
        self.log(f'[privacy] cuda_graphs off, eager from now on: {reason}')
        if self.strict:
            raise kind(f'privacy.cuda_graphs=True: {reason}. Set '
                       "privacy.cuda_graphs='auto' to fall back to eager "
                       'steps') from error

    def _run(self, units, max_grad_norm) -> Outputs:
        """The engine on the static buffers (what is recorded)."""
        batch = self._build(self._static)
        engine = self._concrete
        with engine.batch_loss.replay_context(engine.model):
            return engine._clipped_sum(batch, units, max_grad_norm,
                                       self._mask)

    def clipped_sum(self, batch, units: List[int], max_grad_norm: float,
                    padded: int = 0) -> Outputs:
        """As :meth:`ClippingEngine.clipped_sum`; the sums returned are the
        caller's own (copies of the replayed outputs)."""
        if self.reason is not None:
            return self._eager(batch, units, max_grad_norm, padded)
        if self._concrete.verification_error is None:  # first use: eager
            return self._eager(batch, units, max_grad_norm, padded)
        if list(units) != list(range(len(units))):
            return self._eager(batch, units, max_grad_norm, padded,
                               'its privacy units are not one per sample '
                               "(privacy.unit='image' with several people "
                               'in one image)')
        tensors, build, signature = self.engine.batch_loss.static_parts(
            batch)
        mask = padding_mask(units, padded, self.engine.params[0].device)
        if mask is None:
            mask = torch.ones(len(units), dtype=torch.float64,
                              device=self.engine.params[0].device)
        key = ([(t.shape, t.dtype, t.device) for t in tensors],
               tuple(units), float(max_grad_norm))
        if self._static is None:
            return self._record(batch, padded, tensors, build, signature,
                                mask, key, units, max_grad_norm)
        if key != self._key or signature != self._signature:
            return self._eager(batch, units, max_grad_norm, padded,
                               'its tensor fields or shapes differ from the '
                               'recorded micro-batch')
        torch._foreach_copy_(self._static, tensors)
        self._mask.copy_(mask)
        return self._replayed(batch, units, max_grad_norm, mask)

    def _record(self, batch, padded, tensors, build, signature, mask, key,
                units, max_grad_norm) -> Outputs:
        self._static = [t.clone() for t in tensors]
        self._build, self._signature, self._key = build, signature, key
        self._mask = mask.clone()
        try:
            self._replay, _ = self.recorder.record(
                lambda: self._run(units, max_grad_norm))
        except Exception as error:  # noqa: BLE001 (any failure: eager)
            self._static = None
            self._turn_off(f'recording failed ({type(error).__name__}: '
                           f'{error})', error)
            # Nothing of the failed recording is used.
            return self._eager(batch, units, max_grad_norm, padded)
        self.counts['recorded'] += 1
        return self._replayed(batch, units, max_grad_norm, mask)

    def _replayed(self, batch, units, max_grad_norm, mask) -> Outputs:
        sums, loss = self._replay()
        sums, loss = list(torch._foreach_mul(list(sums), 1.0)), loss.clone()
        self.counts['replayed'] += 1
        if self._verified < self.verify_replays:
            # Against the micro-batch as given, not the buffers: a stale
            # replay and a recorded batch that lost something the loss
            # reads are both caught.
            eager_sums, eager_loss = self._concrete._clipped_sum(
                batch, units, max_grad_norm, mask)
            error = max_relative_difference(sums + [loss],
                                            list(eager_sums) + [eager_loss])
            if not error <= self.tolerance:
                self._turn_off(
                    f'a replayed micro-batch differs from the eager one '
                    f'(relative {error:.3g} > {self.tolerance:g}): the '
                    'recording does not compute what the micro-batch gives',
                    kind=NotPrivateError)
                return list(eager_sums), eager_loss
            self._verified += 1
        return sums, loss
