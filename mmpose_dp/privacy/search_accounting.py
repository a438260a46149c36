"""What a private hyperparameter search costs: a random number of trials.

Papernot & Steinke, "Hyperparameter Tuning with Renyi Differential
Privacy" (ICLR 2022): run K independent trials, K drawn from a truncated
negative binomial (logarithmic: shape 0, geometric: shape 1), or from a
Poisson distribution, each trial with hyperparameters drawn i.i.d. from a
fixed space and the same privacy curve, and release only the best. The
search is then Renyi-DP with a small additive term over one trial's curve
instead of K-fold composition. The accounting is Google's ``dp-accounting``
(``RepeatAndSelectDpEvent`` in its RDP accountant); a ``fixed`` number of
trials is plain composition (PRV, as a single run is reported).

K must stay secret: conditioned on K the search is the best of K fixed
runs, which the amplification does not cover.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .accounting import Segment, epsilon_prv, epsilon_rdp, merge_segments
from .bisection import bisect

#: The shape of each distribution of K (dp-accounting's convention).
SHAPES = {'logarithmic': 0.0, 'geometric': 1.0, 'poisson': math.inf}
DISTRIBUTIONS = tuple(SHAPES) + ('negative_binomial', 'fixed')


@dataclass(frozen=True)
class TrialCount:
    """The distribution of the number of trials K.

    Args:
        distribution: one of :data:`DISTRIBUTIONS`.
        mean: E[K] (the number of trials for ``'fixed'``).
        shape: eta of the truncated negative binomial (only there).
    """
    distribution: str
    mean: float
    shape: Optional[float] = None

    def __post_init__(self):
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f'unknown distribution {self.distribution!r}; '
                             f'use one of {DISTRIBUTIONS}')
        if not self.mean >= 1:
            raise ValueError(f'the mean number of trials must be >= 1, got '
                             f'{self.mean}')
        if self.distribution == 'fixed' and self.mean != int(self.mean):
            raise ValueError('a fixed number of trials is an integer')
        if (self.distribution == 'negative_binomial') != (self.shape
                                                          is not None):
            raise ValueError('give shape (eta > 0) for, and only for, the '
                             "'negative_binomial' distribution")
        if self.shape is not None and not 0 < self.shape < math.inf:
            raise ValueError(f'eta must be in (0, inf), got {self.shape}')

    @property
    def eta(self) -> float:
        """dp-accounting's shape (None for 'fixed')."""
        return SHAPES.get(self.distribution, self.shape)

    def gamma(self) -> float:
        """The halting probability of the truncated negative binomial whose
        mean is :attr:`mean` (bisection; the mean falls as gamma rises)."""
        eta = self.eta
        if eta == 1:
            return 1 / self.mean
        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            if truncated_negative_binomial_mean(mid, eta) < self.mean:
                hi = mid
            else:
                lo = mid
        return lo

    def draw(self, rng: np.random.Generator) -> int:
        """One K (Poisson may give 0: then nothing is released)."""
        if self.distribution == 'fixed':
            return int(self.mean)
        if self.distribution == 'poisson':
            return int(rng.poisson(self.mean))
        gamma = self.gamma()
        if self.eta == 0:
            return int(rng.logseries(1 - gamma))
        while True:  # truncation at K >= 1, exact by rejection
            k = int(rng.negative_binomial(self.eta, gamma))
            if k >= 1:
                return k

    def describe(self) -> str:
        if self.distribution == 'fixed':
            return f'fixed: {int(self.mean)} trials'
        extra = f', eta={self.shape:g}' if self.shape is not None else ''
        return f'{self.distribution} (mean {self.mean:g}{extra})'


def truncated_negative_binomial_mean(gamma: float, eta: float) -> float:
    """E[K] of Definition 1 of Papernot & Steinke (eta = 0: logarithmic)."""
    if not 0 < gamma <= 1:
        raise ValueError(f'gamma must be in (0, 1], got {gamma}')
    if gamma == 1:
        return 1.0
    if eta == 0:
        return (1 / gamma - 1) / math.log(1 / gamma)
    return eta * (1 / gamma - 1) / (1 - gamma ** eta)


def _trial_event(segments: Sequence[Segment]):
    import dp_accounting
    events = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            s.sample_rate, dp_accounting.GaussianDpEvent(s.noise_multiplier)),
        s.steps) for s in merge_segments(segments)]
    return events[0] if len(events) == 1 else \
        dp_accounting.ComposedDpEvent(events)


def _rdp_epsilon(event, delta: float) -> float:
    from dp_accounting.rdp import RdpAccountant
    accountant = RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def trial_epsilon_rdp(segments: Sequence[Segment], delta: float) -> float:
    """One trial's epsilon by dp-accounting's RDP accountant."""
    return _rdp_epsilon(_trial_event(segments), delta)


def composed_epsilon_rdp(segments: Sequence[Segment], delta: float,
                         trials: int) -> float:
    """``trials`` trials composed (RDP): what a naive search would report."""
    import dp_accounting
    return _rdp_epsilon(dp_accounting.SelfComposedDpEvent(
        _trial_event(segments), int(trials)), delta)


def search_epsilon(segments: Sequence[Segment], delta: float,
                   trials: TrialCount) -> float:
    """Epsilon at ``delta`` of releasing the best of K trials, each one
    accounted as ``segments`` (what its ledger composes).

    Random K: RDP repeat-and-select. Fixed K: the K trials composed, by
    the PRV upper bound (K = 1 is exactly one run's reported epsilon).
    """
    if trials.distribution == 'fixed':
        return epsilon_prv(list(segments) * int(trials.mean), delta)
    import dp_accounting
    return _rdp_epsilon(dp_accounting.dp_event.RepeatAndSelectDpEvent(
        _trial_event(segments), float(trials.mean), float(trials.eta)),
        delta)


def search_summary(segments: Sequence[Segment], delta: float,
                   trials: TrialCount) -> dict:
    """The figures of a search card (all computed, none measured)."""
    naive = max(1, math.ceil(trials.mean))
    return dict(
        epsilon=search_epsilon(segments, delta, trials),
        delta=delta,
        trials=trials.describe(),
        accountant=('PRV upper bound of the fixed trials composed'
                    if trials.distribution == 'fixed' else
                    'RDP repeat-and-select (Papernot & Steinke 2022; '
                    'dp-accounting RepeatAndSelectDpEvent)'),
        trial_epsilon=epsilon_prv(segments, delta),
        trial_epsilon_rdp=trial_epsilon_rdp(segments, delta),
        trial_epsilon_rdp_opacus=epsilon_rdp(segments, delta),
        naive_trials=naive,
        naive_epsilon=epsilon_prv(list(segments) * naive, delta),
        naive_epsilon_rdp=composed_epsilon_rdp(segments, delta, naive))


def calibrate_search_sigma(target_epsilon: float, delta: float,
                           sample_rate: float, steps: int,
                           trials: TrialCount, accounted=None,
                           tolerance: float = 2e-3) -> float:
    """The smallest sigma (to ``tolerance``, relative) whose search epsilon
    is at most ``target_epsilon``. ``accounted(sigma)`` gives a trial's
    segments (default: one DP-SGD segment at (sigma, q, steps))."""
    if target_epsilon <= 0:
        raise ValueError(f'target_epsilon must be > 0, got {target_epsilon}')

    def segments(sigma: float) -> List[Segment]:
        if accounted is not None:
            return accounted(sigma)
        return [Segment(sigma, sample_rate, steps)]

    def fits(sigma: float) -> bool:
        return search_epsilon(segments(sigma), delta, trials) <= \
            target_epsilon

    lo, hi = 0.25, 1.0
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > 1e3:
            raise ValueError(
                f'no noise multiplier below 1e3 reaches a search epsilon of '
                f'{target_epsilon} (q={sample_rate}, steps={steps}, '
                f'{trials.describe()})')
    while fits(lo) and lo > 1e-2:
        lo, hi = lo / 2, lo
    return bisect(fits, lo, hi, tolerance)[1]
