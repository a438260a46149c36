"""The clipping-engine seam: a private micro-batch in, the sum of clipped
per-unit gradients out.

An engine owns how per-sample gradients are obtained (Opacus hooks,
``torch.func.vmap``, per-layer norms...), may never materialise them, and
checks that it captured exactly one contribution per sample. Everything
after the clipped sum (noise, reduction over processes, scaling, stages,
the optimizer step) is the same whichever engine produced it.
"""
import contextlib
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import clipping
from ..clipping import sum_per_unit


class BatchLoss:
    """How an engine turns a batch into a training loss.

    Subclasses know the batch format (a tuple of tensors in tests, MMPose's
    ``dict(inputs=..., data_samples=[...])`` in training).
    """

    def prepare(self, model: nn.Module, batch):
        """The batch as the loss takes it (e.g. after a data
        preprocessor); outside any per-sample machinery."""
        return batch

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        """The scalar training loss of ``batch``: the mean (or sum, as the
        engine's ``loss_reduction`` says) of per-sample losses."""
        raise NotImplementedError

    def num_samples(self, batch) -> int:
        raise NotImplementedError

    def select(self, batch, indices: Sequence[int]):
        """The batch of the samples ``indices`` (repeats allowed), in that
        order."""
        raise NotImplementedError(
            f'{type(self).__name__} cannot select samples of a batch')

    def probe(self, batch, size: int, generator: torch.Generator):
        """A batch of ``size`` samples with the structure of ``batch``
        (shapes, dtypes, fields) and random contents: what an engine is
        checked on before it sees private data, so that the check and its
        log depend on no private value."""
        raise NotImplementedError(
            f'{type(self).__name__} cannot make a probe batch')

    def to_float64(self, batch):
        """The batch with its floating tensors in float64."""
        raise NotImplementedError(
            f'{type(self).__name__} cannot convert a batch to float64')

    def split(self, batch) -> Tuple[List[torch.Tensor], Callable]:
        """``(tensors, rebuild)``: tensors with a leading sample dimension,
        and ``rebuild(slices)`` that makes a batch of one sample from one
        slice of each (called inside ``torch.func.vmap``)."""
        raise NotImplementedError(
            f'{type(self).__name__} cannot split a batch per sample')

    def per_sample_context(self):
        """A context around per-sample calls of :meth:`loss` (e.g. to keep
        code that reads tensor data out of ``vmap``)."""
        return contextlib.nullcontext()

    def static_parts(self, batch) -> Tuple[List[torch.Tensor], Callable,
                                           object]:
        """``(tensors, build, signature)`` of a batch, for a replayed
        (CUDA-graph) step: its per-sample tensors (leading sample
        dimension); ``build(tensors)``, the batch reading exactly those
        tensors (views: a replay sees whatever they hold) and nothing else
        of the batch; and a signature (comparable with ``==``) that two
        batches must share for one to be replayed in the other's
        buffers."""
        tensors, _ = self.split(batch)
        return list(tensors), tuple, None

    def replay_context(self, model: nn.Module):
        """A context around a recorded (replayed) loss: what the loss may
        not do there (read tensor data back to the host) switched off."""
        return contextlib.nullcontext()


class TensorBatchLoss(BatchLoss):
    """A batch that is a tuple of tensors sharing the leading sample
    dimension; ``fn(model, *tensors)`` is its loss."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn

    def loss(self, model, batch):
        return self.fn(model, *batch)

    def num_samples(self, batch):
        return len(batch[0])

    def select(self, batch, indices):
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return tuple(t[index.to(t.device)] for t in batch)

    def probe(self, batch, size, generator):
        # Floating tensors random; integer ones (class labels) cycled.
        index = [i % len(batch[0]) for i in range(size)]
        return tuple(
            torch.randn((size, ) + t.shape[1:], generator=generator,
                        dtype=t.dtype).to(t.device)
            if t.is_floating_point() else t[index] for t in batch)

    def to_float64(self, batch):
        return tuple(t.double() if t.is_floating_point() else t
                     for t in batch)

    def split(self, batch):
        return list(batch), lambda slices: tuple(
            t.unsqueeze(0) for t in slices)


def clip_units(grad_samples: Sequence[torch.Tensor], units: List[int],
               max_grad_norm: float,
               unit_mask: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """Sum each unit's per-sample gradients, clip every unit to C, add up;
    a unit whose ``unit_mask`` is 0 (padding) adds exactly nothing."""
    if units != list(range(len(units))):
        grad_samples = sum_per_unit(grad_samples, torch.tensor(units),
                                    max(units) + 1)
    factors = clipping.clip_factors(clipping.per_sample_norms(grad_samples),
                                    max_grad_norm)
    if unit_mask is not None:
        factors = factors * unit_mask.to(factors)
    return clipping.clipped_sum(grad_samples, factors)


def padding_mask(units: List[int], padded: int,
                 device) -> Optional[torch.Tensor]:
    """1 per real unit, 0 per padding unit (the last ``padded`` samples,
    one unit each); None without padding."""
    if not padded:
        return None
    if padded < 0 or padded >= len(units):
        raise ValueError(f'padded={padded} of a micro-batch of '
                         f'{len(units)} samples: padding must leave at '
                         'least one real sample')
    real = set(units[:-padded])
    pads = units[-padded:]
    if len(set(pads)) != padded or real & set(pads):
        raise ValueError('each padding sample must be a unit of its own')
    mask = torch.ones(max(units) + 1, dtype=torch.float64, device=device)
    mask[pads] = 0
    return mask


class ClippingEngine:
    """Base class of the clipping engines.

    Args:
        model: the module whose trainable parameters are private.
        batch_loss: how a batch becomes a loss (:class:`BatchLoss`).
        loss_reduction: ``'mean'`` or ``'sum'`` over the batch.
    """

    #: Registry name (``privacy.engine``).
    name = ''

    def __init__(self, model: nn.Module, batch_loss: BatchLoss,
                 loss_reduction: str):
        if loss_reduction not in ('mean', 'sum'):
            raise ValueError(
                f"loss_reduction must be 'mean' or 'sum', got {loss_reduction}")
        self.model = model
        self.batch_loss = batch_loss
        self.loss_reduction = loss_reduction
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        #: Relative error against the reference on the probe batch, once
        #: checked (:mod:`.verification`).
        self.verification_error: Optional[float] = None

    @property
    def busy(self) -> bool:
        """True while private per-sample machinery is attached (no public
        forward may run then)."""
        return False

    def clipped_sum(self, batch, units: List[int], max_grad_norm: float,
                    padded: int = 0
                    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """``(sum over units of clip(unit gradient, C), detached loss)`` for
        one private micro-batch; ``units[i]`` is sample i's privacy unit.
        The last ``padded`` samples are padding (public dummies, a unit
        each, for a static batch shape): their clip factors are multiplied
        by 0, so they add exactly nothing. Nothing is left in
        ``param.grad``.

        Before its first private micro-batch the engine is checked against
        an independent per-sample reference on a random probe batch shaped
        like this one (:func:`.verification.verify_engine`); an engine that
        does not match refuses with :class:`NotPrivateError`."""
        if self.verification_error is None:
            from .verification import verify_engine
            self.verification_error = verify_engine(self, batch)
        mask = padding_mask(units, padded, self.params[0].device)
        return self._clipped_sum(batch, units, max_grad_norm, mask)

    def _clipped_sum(self, batch, units: List[int], max_grad_norm: float,
                     unit_mask: Optional[torch.Tensor] = None
                     ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """:meth:`clipped_sum` without the first-use check."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}({len(self.params)} parameters)'
