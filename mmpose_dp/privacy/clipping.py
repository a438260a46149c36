"""Flat (all-parameter) clipping of per-sample gradients."""
from typing import List, Sequence

import torch

#: Added to the norm as in the paper and Opacus: min(1, C / (||g|| + 1e-6)).
NORM_EPS = 1e-6


def per_sample_norms(grad_samples: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each sample's gradient over all parameters.

    Args:
        grad_samples: one tensor per parameter, shaped ``[batch, *param]``.

    Returns:
        A ``[batch]`` tensor.
    """
    per_param = [g.reshape(g.shape[0], -1).norm(2, dim=1) for g in grad_samples]
    return torch.stack(per_param, dim=1).norm(2, dim=1)


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``min(1, C / (||g_i|| + 1e-6))`` per sample."""
    if max_grad_norm <= 0:
        raise ValueError(f'max_grad_norm must be > 0, got {max_grad_norm}')
    return (max_grad_norm / (norms + NORM_EPS)).clamp(max=1.0)


def clipped_sum(grad_samples: Sequence[torch.Tensor],
                factors: torch.Tensor) -> List[torch.Tensor]:
    """Sum over the batch of the clipped per-sample gradients, per parameter."""
    return [torch.einsum('b,b...->...', factors.to(g.dtype), g)
            for g in grad_samples]


def clip_and_sum(grad_samples: Sequence[torch.Tensor],
                 max_grad_norm: float) -> List[torch.Tensor]:
    """Clip each sample's whole gradient to norm ``max_grad_norm``; sum."""
    factors = clip_factors(per_sample_norms(grad_samples), max_grad_norm)
    return clipped_sum(grad_samples, factors)


def sum_per_unit(grad_samples: Sequence[torch.Tensor],
                 unit_ids: torch.Tensor, num_units: int) -> List[torch.Tensor]:
    """Add up the per-sample gradients of each privacy unit.

    With the image as the unit, the person records of one image are summed
    before clipping, so the image makes one contribution of norm at most C.

    Args:
        grad_samples: one tensor per parameter, ``[samples, *param]``.
        unit_ids: ``[samples]`` integer unit of each sample, in
            ``[0, num_units)``.
        num_units: number of units in the micro-batch.
    """
    unit_ids = unit_ids.to(torch.long)
    out = []
    for g in grad_samples:
        summed = g.new_zeros((num_units, ) + g.shape[1:])
        out.append(summed.index_add_(0, unit_ids.to(g.device), g))
    return out
