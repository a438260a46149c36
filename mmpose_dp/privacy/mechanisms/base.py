"""What a privacy mechanism owns: batch selection, noise, accounting, plan.

A mechanism is plain torch/numpy (no MMEngine). The training glue asks it
which units may join step ``t`` and at what Poisson rate, what noise to add
to step ``t``'s clipped sum, which Poisson-subsampled Gaussian segments its
steps compose to (the accountant's input), and which noise multiplier meets
a target epsilon. Its :meth:`Mechanism.config` is what a ledger records; a
ledger of one mechanism is never continued by another.
"""
from typing import ClassVar, Dict, List, Sequence

import numpy as np
import torch

from ..accounting import Segment, merge_segments
from ..calibration import calibrate_noise_multiplier
from ..noise import NoiseStream, white_noise


class Mechanism:
    """The interface; see :class:`~.gaussian.GaussianMechanism`."""

    #: Registry name (``privacy.mechanism=dict(type=name, ...)``).
    name: ClassVar[str] = ''
    version: ClassVar[int] = 1

    @property
    def keeps_keys(self) -> bool:
        """Whether a resume needs the run's secret keys (noise that depends
        on earlier steps' noise, batches that depend on a secret grouping):
        see :mod:`mmpose_dp.privacy.secret_store`."""
        return False

    @property
    def one_noise_multiplier(self) -> bool:
        """Whether all steps of a run must share one sigma (a resume with
        more steps than planned then keeps it, and the budget stop bounds
        the steps, instead of calibrating the rest anew)."""
        return False

    def config(self) -> Dict:
        """What the ledger records (and compares on resume)."""
        return dict(type=self.name, version=self.version)

    # -- batch selection --------------------------------------------------
    def unit_rate(self, sample_rate: float) -> float:
        """Poisson rate of a unit at a step it may join, for a run whose
        expected batch is ``sample_rate`` x N."""
        raise NotImplementedError

    def eligible(self, step: int, num_units: int, key: int) -> np.ndarray:
        """Indices of the units that may join step ``step``; ``key`` is the
        sampler's secret seed."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, step: int, num_units: int,
             sample_rate: float, key: int) -> np.ndarray:
        """The units (sorted indices) drawn for step ``step``."""
        pool = self.eligible(step, num_units, key)
        chosen = rng.random(len(pool)) < self.unit_rate(sample_rate)
        return np.sort(pool[chosen])

    # -- noise ------------------------------------------------------------
    def add_noise(self, summed: Sequence[torch.Tensor], std: float,
                  stream: NoiseStream, rank: int, step: int) -> None:
        """Add step ``step``'s noise (standard deviation ``std`` = sigma C
        per coordinate of the white draw) to ``summed``, in place."""
        raise NotImplementedError

    def whitened(self, noises: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The white draws behind the noise of steps ``0 .. T-1`` (each a
        flat tensor): what must be i.i.d. N(0, (sigma C)^2) if the noise is
        the mechanism's (a check on test runs; default: the noise itself)."""
        return list(noises)

    # -- accounting -------------------------------------------------------
    def segments(self, steps: Sequence[Segment]) -> List[Segment]:
        """The Poisson-subsampled Gaussian segments (sigma, rate, count) the
        mechanism's ``steps`` (as a ledger records them: sigma, the run's
        sample rate, steps) compose to."""
        raise NotImplementedError

    def plan_noise_multiplier(self, target_epsilon: float, delta: float,
                              sample_rate: float, steps: int,
                              prior: Sequence[Segment] = ()) -> float:
        """The smallest sigma for which ``prior`` (ledger segments) plus
        ``steps`` steps at ``sample_rate`` stay within ``target_epsilon``."""
        rounds = self.segments([Segment(1.0, sample_rate, steps)])[0]
        return calibrate_noise_multiplier(
            target_epsilon, delta, rounds.sample_rate, rounds.steps,
            prior_segments=self.segments(merge_segments(prior)))

    def __repr__(self) -> str:
        params = ', '.join(f'{k}={v}' for k, v in self.config().items()
                           if k not in ('type', 'version'))
        return f'{type(self).__name__}({params})'


def noise_like(tensors: Sequence[torch.Tensor], std: float,
               generator: torch.Generator) -> List[torch.Tensor]:
    """White noise N(0, std^2) shaped as ``tensors``: exactly the draws
    :func:`~mmpose_dp.privacy.add_gaussian_noise` adds (one flat draw)."""
    return white_noise(list(tensors), std, generator)


def check_sample_rate(sample_rate: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ValueError(f'sample_rate must be in (0, 1], got {sample_rate}')
