"""The fast engine's rules for normalisation layers: the per-sample
gradients of their affine map (weight, bias) after the normalisation,
which involves no parameter."""
import math
from typing import List, Tuple

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

    def instantiate(self, a, g) -> List[torch.Tensor]:
        x_hat = self.normalised(a)
        dims = self.reduced_dims(a)
        out = []
        if self.train_weight:
            # sum over the reduced dims of g * x_hat
            out.append(_summed_product(g, x_hat, dims, self.one_kernel)
                       if dims else g * x_hat)
        if self.train_bias:
            out.append(g.sum(dims) if dims else g)
        return out


def _summed_product(g: torch.Tensor, x: torch.Tensor,
                    dims: Tuple[int, ...], one_kernel: bool) -> torch.Tensor:
    """``(g * x).sum(dims)`` for contiguous ``dims`` (channels: 2.., or a
    layer norm's middle dims 1..k): with ``one_kernel`` one batched
    product (one launch, for a GPU), else a multiply-and-sum, which a CPU
    runs several times faster than a batch of one-row matrix products."""
    kept = [d for d in range(g.dim()) if d not in dims]
    if dims == tuple(range(2, g.dim())):  # [B, C, *spatial]
        B, C = g.shape[:2]
        g, x = g.reshape(B, C, -1), x.reshape(B, C, -1)
        return (torch.einsum('bcn,bcn->bc', g, x) if one_kernel else
                torch.linalg.vecdot(g, x))
    B, rest = g.shape[0], [g.shape[d] for d in kept[1:]]
    g = g.reshape(B, -1, math.prod(rest))
    x = x.reshape(B, -1, math.prod(rest))
    return (torch.einsum('bnc,bnc->bc', g, x) if one_kernel else
            (g * x).sum(1)).view(B, *rest)


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
