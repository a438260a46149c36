"""Gaussian noise for the sum of clipped per-sample gradients."""
from typing import Optional, Sequence

import torch


def make_generator(device: torch.device,
                   seed: Optional[int] = None) -> torch.Generator:
    """A noise generator on ``device``.

    With ``seed=None`` it is seeded from the OS entropy pool, so the noise
    cannot be replayed from the experiment's public seed; a fixed seed makes
    runs reproducible (for tests and debugging).
    """
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def add_gaussian_noise(tensors: Sequence[torch.Tensor], std: float,
                       generator: torch.Generator) -> None:
    """Add ``N(0, std^2)`` independently to every coordinate, in place."""
    if std == 0:
        return
    for t in tensors:
        t.add_(torch.normal(
            0.0, std, size=t.shape, generator=generator, device=t.device,
            dtype=t.dtype))
