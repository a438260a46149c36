"""DP-SGD's mechanism: Poisson sampling of every unit, white Gaussian noise."""
from typing import List, Sequence

import numpy as np
import torch

from ..accounting import Segment, merge_segments
from ..noise import NoiseStream, add_gaussian_noise
from .base import Mechanism, check_sample_rate


class GaussianMechanism(Mechanism):
    """Every step draws each unit with rate q and adds N(0, (sigma C)^2 I)
    from the generator of (secret key, rank, step); the steps compose as
    the Poisson-subsampled Gaussian (PRV)."""

    name = 'gaussian'

    def unit_rate(self, sample_rate: float) -> float:
        check_sample_rate(sample_rate)
        return sample_rate

    def eligible(self, step: int, num_units: int, key: int) -> np.ndarray:
        return np.arange(num_units)

    def add_noise(self, summed: Sequence[torch.Tensor], std: float,
                  stream: NoiseStream, rank: int, step: int) -> None:
        if not summed:
            return
        add_gaussian_noise(summed, std, stream.generator(
            summed[0].device, rank, step))

    def segments(self, steps: Sequence[Segment]) -> List[Segment]:
        return merge_segments(steps)
