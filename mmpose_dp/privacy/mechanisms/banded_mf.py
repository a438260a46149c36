"""BandMF with cyclic Poisson sampling (Choquette-Choo et al., NeurIPS 2023).

The private units are split into ``b`` fixed groups by a secret
permutation; step t may draw only from group ``t mod b``, each of its units
with rate ``min(1, b q)`` (the expected batch stays about ``q N``). Its
noise is the b-banded correlated stream of :mod:`.banded_noise`. A unit's
participations are then at least ``b`` steps apart, where the columns of
the b-banded strategy never overlap, so the run composes as DP-SGD at rate
``min(1, b q)`` over ``ceil(T / b)`` rounds (each unit joins at most that
many). ``b = 1`` is DP-SGD exactly: same batches, same noise.

Both the group permutation (from the sampler's key) and the noise stream
(from the noise key) must be the same before and after a resume, and the
group of a step is that of its ledger step (its noise index), not of its
place in an epoch: a resume that changed either would put a unit's
participations closer than ``b`` steps, where the accounting above no
longer holds.
"""
import math
from typing import List, Sequence

import numpy as np
import torch

from ..accounting import Segment, merge_segments
from ..errors import NotPrivateError
from ..noise import NoiseStream
from .banded_noise import CorrelatedNoise, add_all
from .base import Mechanism, check_sample_rate, noise_like

#: Sub-stream of the sampler's key that permutes units into groups.
GROUPS_DOMAIN = 0x62616e64  # 'band'


class BandedMF(Mechanism):
    """``privacy.mechanism=dict(type='banded_mf', bands=b)``."""

    name = 'banded_mf'

    def __init__(self, bands: int = 1):
        if int(bands) != bands or bands < 1:
            raise ValueError(f'banded_mf needs bands >= 1, got {bands}')
        self.bands = int(bands)
        self._noise = CorrelatedNoise(self.bands)
        self._groups_of = None  # (num_units, key) -> groups, cached

    @property
    def keeps_keys(self) -> bool:
        return self.bands > 1

    @property
    def one_noise_multiplier(self) -> bool:
        return self.bands > 1

    def config(self):
        return dict(super().config(), bands=self.bands)

    # -- batch selection --------------------------------------------------
    def unit_rate(self, sample_rate: float) -> float:
        check_sample_rate(sample_rate)
        return min(1.0, self.bands * sample_rate)

    def groups(self, num_units: int, key: int) -> List[np.ndarray]:
        """The ``b`` groups (sorted unit indices) of a secret permutation."""
        if self._groups_of is None or self._groups_of[0] != (num_units, key):
            if self.bands == 1:
                groups = [np.arange(num_units)]
            else:
                order = np.random.default_rng(
                    [int(key), GROUPS_DOMAIN]).permutation(num_units)
                groups = [np.sort(order[g::self.bands])
                          for g in range(self.bands)]
            if min(len(g) for g in groups) == 0:
                raise NotPrivateError(
                    f'banded_mf with bands={self.bands} needs at least '
                    f'{self.bands} private units, got {num_units}')
            self._groups_of = ((num_units, key), groups)
        return self._groups_of[1]

    def eligible(self, step: int, num_units: int, key: int) -> np.ndarray:
        return self.groups(num_units, key)[step % self.bands]

    # -- noise ------------------------------------------------------------
    def add_noise(self, summed: Sequence[torch.Tensor], std: float,
                  stream: NoiseStream, rank: int, step: int) -> None:
        if not summed:
            return
        device = summed[0].device

        def white_at(t: int) -> List[torch.Tensor]:
            return noise_like(summed, std, stream.generator(device, rank, t))

        if step != self._noise.step:  # resumed (or a step repeated)
            self._noise.replay(white_at, step)
        add_all(summed, self._noise.next(white_at(step)))

    def whitened(self, noises):
        """``z_t = sum_{j < b} c_j w_{t-j}``: the strategy applied to the
        stream (``S w = z``)."""
        c = self._noise.coefficients
        return [sum(c[j] * noises[t - j] for j in range(min(len(c), t + 1)))
                for t in range(len(noises))]

    # -- accounting -------------------------------------------------------
    def segments(self, steps: Sequence[Segment]) -> List[Segment]:
        steps = merge_segments(steps)
        if self.bands == 1:
            return steps
        if len(steps) > 1:
            raise NotPrivateError(
                f'banded_mf (bands={self.bands}) keeps one noise multiplier '
                'and sample rate for a whole run (a change mixes the noise '
                f'of rounds with different sigma); this ledger has {steps}')
        return [Segment(s.noise_multiplier, self.unit_rate(s.sample_rate),
                        math.ceil(s.steps / self.bands)) for s in steps]
