"""The fast engine's rules for normalisation layers: the per-sample
gradients of their affine map (weight, bias) after the normalisation,
which involves no parameter."""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .capture import LayerCapture, written_into
from .rules import register_layer_rule


class AffineNormCapture(LayerCapture):
    """``y = weight * x_hat + bias``, ``x_hat`` parameter-free."""

    def normalised(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduced_dims(self, a: torch.Tensor) -> Tuple[int, ...]:
        """The dims a sample's affine gradient sums over: per channel
        (dim 1) by default."""
        return tuple(range(2, a.dim()))

    def instantiate(self, a, g, out=None, state=None) -> List[torch.Tensor]:
        # With ``out`` (the engine's rows) the sums are written straight
        # into them: no copy.
        x_hat = self.normalised(a)
        dims = self.reduced_dims(a)
        rows = iter(out or ())
        grads = []
        if self.train_weight:
            # sum over the reduced dims of g * x_hat
            row = next(rows, None)
            grads.append(_summed_product(g, x_hat, dims, self.one_kernel,
                                         row) if dims else
                         torch.mul(g, x_hat, **_into(row)))
        if self.train_bias:
            row = next(rows, None)
            if dims:
                grads.append(torch.sum(g, dims, **_into(row)))
            else:
                grads.append(g if row is None else row.copy_(g))
        return grads


def _into(row: Optional[torch.Tensor]) -> dict:
    return {} if row is None else dict(out=row)


def _summed_product(g: torch.Tensor, x: torch.Tensor,
                    dims: Tuple[int, ...], one_kernel: bool,
                    out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(g * x).sum(dims)`` for contiguous ``dims`` (channels: 2.., or a
    layer norm's middle dims 1..k), written into ``out`` if given: with
    ``one_kernel`` one batched product (one launch, for a GPU), else a
    multiply-and-sum, which a CPU runs several times faster than a batch
    of one-row matrix products."""
    kept = [d for d in range(g.dim()) if d not in dims]
    if dims == tuple(range(2, g.dim())):  # [B, C, *spatial]
        B, C = g.shape[:2]
        g, x = g.reshape(B, C, -1), x.reshape(B, C, -1)
        if not one_kernel:
            return torch.linalg.vecdot(g, x, **_into(out))
        product = torch.einsum('bcn,bcn->bc', g, x)
        return product if out is None else out.copy_(product)
    B, rest = g.shape[0], [g.shape[d] for d in kept[1:]]
    g = g.reshape(B, -1, math.prod(rest))
    x = x.reshape(B, -1, math.prod(rest))
    flat = None if out is None else out.view(B, math.prod(rest))
    if not one_kernel:
        product = torch.sum(g * x, 1, **_into(flat))
    else:
        product = torch.einsum('bnc,bnc->bc', g, x)
        if flat is not None:
            flat.copy_(product)
    return product.view(B, *rest) if out is None else out


def _as_one_sample(t: torch.Tensor) -> torch.Tensor:
    """``[B, C, *rest]`` -> ``[1, B C, prod(rest)]``: sample b's channel c
    is channel ``b C + c`` of one sample, so a norm's backward kernel sums
    its weight and bias gradients per sample instead of over the batch."""
    return t.reshape(1, t.shape[0] * t.shape[1], -1)


def _same_dtype(a: torch.Tensor, g: torch.Tensor):
    """Both in their promoted dtype (no op when they agree)."""
    if a.dtype == g.dtype:
        return a, g
    dtype = torch.promote_types(a.dtype, g.dtype)
    return a.to(dtype), g.to(dtype)


def _from_backward(capture: AffineNormCapture, result, shape,
                   out: Optional[List[torch.Tensor]] = None
                   ) -> List[torch.Tensor]:
    """The trainable ones of a norm backward's ``(_, dweight, dbias)``, as
    ``[B, C]`` per-sample gradients (copied into ``out`` if given)."""
    _, weight, bias = result
    grads = ([weight.view(shape)] if capture.train_weight else []) + (
        [bias.view(shape)] if capture.train_bias else [])
    return [written_into(o, x) for o, x in zip(out, grads)] if out else grads


@register_layer_rule('group_norm')
class GroupNormCapture(AffineNormCapture):
    """Per-sample weight and bias gradients in one op, whatever the
    layer's size: group norm's backward kernel on the batch as one sample
    of ``B C`` channels in ``B G`` groups, which gives the per-channel sums
    of every sample. The statistics are the forward's own (saved by
    autograd for its backward), else recomputed (one more op). The
    gradients are ``[B, C]``, so they take no rows: stacked after the
    backward."""

    writes_rows = False

    def forward_state(self, output):
        """``(mean, rstd)``, ``[B, G]``, of the forward's group norm kernel
        when ``output`` came straight from it."""
        node = output.grad_fn
        if (type(node).__name__ != 'NativeGroupNormBackward0'
                or node._saved_group != self.module.num_groups
                or node._saved_N != output.shape[0]):
            return None
        # Detached: a saved output points back to its node, which holds
        # the hook that would hold them (a cycle that keeps every step's
        # graph alive).
        return node._saved_result1.detach(), node._saved_result2.detach()

    def instantiate(self, a, g, out=None, state=None):
        m = self.module
        a, g = _same_dtype(a, g)
        B, C, G = a.shape[0], a.shape[1], m.num_groups
        positions = math.prod(a.shape[2:])
        if state is not None and state[0].dtype == a.dtype:
            mean, rstd = state
        else:
            _, mean, rstd = torch.ops.aten.native_group_norm(
                a, None, None, B, C, positions, G, m.eps)
        return _from_backward(
            self, torch.ops.aten.native_group_norm_backward(
                _as_one_sample(g), _as_one_sample(a), mean.view(1, B * G),
                rstd.view(1, B * G), None, 1, B * C, positions, B * G,
                [False, self.train_weight, self.train_bias]), (B, C), out)


@register_layer_rule('layer_norm')
class LayerNormCapture(AffineNormCapture):

    def normalised(self, a):
        m = self.module
        return F.layer_norm(a, m.normalized_shape, eps=m.eps)

    def reduced_dims(self, a):
        return tuple(range(1, a.dim() - len(self.module.normalized_shape)))


@register_layer_rule('frozen_batch_norm')
class FrozenBatchNormCapture(AffineNormCapture):
    """:class:`~mmpose_dp.models.FrozenBatchNorm` (or a layer registered
    as one): a per-channel affine map after ``module.normalise``.

    A :class:`~mmpose_dp.models.FrozenBatchNorm` itself (whose
    ``normalise`` is batch norm with its running statistics) takes three
    ops: its statistics repeated per sample and batch norm's backward
    kernel on the batch as one sample of ``B C`` channels. A layer
    registered as one keeps the generic multiply-and-sum into its rows.
    """

    def __init__(self, module):
        from mmpose_dp.models.frozen_batch_norm import FrozenBatchNorm
        super().__init__(module)
        self.batch_norm = type(module) is FrozenBatchNorm
        self.writes_rows = not self.batch_norm

    def normalised(self, a):
        return self.module.normalise(a)

    def instantiate(self, a, g, out=None, state=None):
        if not self.batch_norm:
            return super().instantiate(a, g, out)
        m = self.module
        a, g = _same_dtype(a, g)
        B, C = a.shape[:2]
        return _from_backward(
            self, torch.ops.aten.native_batch_norm_backward(
                _as_one_sample(g), _as_one_sample(a), None,
                m.running_mean.to(a.dtype).repeat(B),
                m.running_var.to(a.dtype).repeat(B), None, None, False, m.eps,
                [False, self.train_weight, self.train_bias]), (B, C), out)
