"""The fast engine's rules for normalisation layers: the per-sample
gradients of their affine map (weight, bias) after the normalisation,
which involves no parameter."""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .capture import LayerCapture
from .rules import register_layer_rule


class AffineNormCapture(LayerCapture):
    """``y = weight * x_hat + bias``, ``x_hat`` parameter-free."""

    def normalised(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduced_dims(self, a: torch.Tensor) -> Tuple[int, ...]:
        """The dims a sample's affine gradient sums over: per channel
        (dim 1) by default."""
        return tuple(range(2, a.dim()))

    def instantiate(self, a, g, out=None) -> List[torch.Tensor]:
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


@register_layer_rule('group_norm')
class GroupNormCapture(AffineNormCapture):

    def normalised(self, a):
        m = self.module
        return F.group_norm(a, m.num_groups, eps=m.eps)


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
    as one): a per-channel affine map after ``module.normalise``."""

    def normalised(self, a):
        return self.module.normalise(a)
