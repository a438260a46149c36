"""The arithmetic of a neighbouring-dataset check, in plain torch.

Two runs of the same DP step on neighbouring data sets D and D' (one unit
removed, or replaced), with the same secrets, the same weights before every
step and sigma = 0, release sums of clipped gradients; their difference is
at most C (removed) or 2 C (replaced) if the mechanism has the sensitivity
its accountant assumes. With sigma > 0, released minus clipped is the noise,
whose spread must be sigma * C per coordinate.
"""
from typing import Dict, Sequence

import torch


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One float64 vector of all coordinates."""
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])


def release_distance(a: Sequence[torch.Tensor],
                     b: Sequence[torch.Tensor]) -> float:
    """L2 distance of two released sums."""
    return float((flat(a) - flat(b)).norm())


def noise_statistics(noise: torch.Tensor, std: float) -> Dict[str, float]:
    """How far ``noise`` (one draw per coordinate) is from ``N(0, std^2)``:
    its standard deviation over ``std`` (1 expected, standard error
    ``1/sqrt(2n)``) and its mean in standard errors (0 expected)."""
    n = noise.numel()
    spread = float(noise.std())
    return dict(coordinates=n, std_ratio=spread / std,
                std_ratio_error=(1 / (2 * n))**0.5,
                mean_z=float(noise.mean()) / (std / n**0.5))


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two noise vectors (0 for independent draws,
    standard error ``1/sqrt(n)``)."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))
