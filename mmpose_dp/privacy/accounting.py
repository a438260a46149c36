"""Privacy accounting for the Poisson-subsampled Gaussian mechanism.

A run is a sequence of *segments* ``(noise_multiplier, sample_rate, steps)``;
a resumed run whose settings changed simply adds a segment. Epsilon is the
PRV accountant's (prv-accountant) *upper bound*; Opacus' RDP analysis is kept
as a cross-check. prv-accountant's ``eps_error`` is absolute, so it is chosen
relative to the epsilon at hand (coarse pass first, then a fine one): the
reported upper bound is then within ``2 * RELATIVE_EPS_ERROR`` of the true
epsilon.
"""
import math
import warnings
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from prv_accountant import PRVAccountant
from prv_accountant.privacy_random_variables import \
    PoissonSubsampledGaussianMechanism


#: Fine-pass eps_error as a fraction of epsilon: upper bound <= 1.018 * true.
RELATIVE_EPS_ERROR = 0.009
#: Coarse-pass eps_error as a fraction of the RDP epsilon (fast, < 1 s).
COARSE_RELATIVE_EPS_ERROR = 0.1
#: prv-accountant's delta_error as a fraction of delta.
RELATIVE_DELTA_ERROR = 1e-3


class Segment(NamedTuple):
    """``steps`` DP-SGD steps at one noise multiplier and sample rate."""
    noise_multiplier: float
    sample_rate: float
    steps: int


def merge_segments(segments: Iterable[Sequence]) -> List[Segment]:
    """Sum the steps of segments that share (noise_multiplier, sample_rate).

    Composition is commutative, so this changes no epsilon; it keeps the
    PRV composition to one Fourier power per distinct mechanism.
    """
    merged = {}
    for sigma, q, steps in segments:
        if steps < 0:
            raise ValueError(f'a segment cannot have negative steps: {steps}')
        if steps:
            key = (float(sigma), float(q))
            merged[key] = merged.get(key, 0) + int(steps)
    return [Segment(s, q, n) for (s, q), n in merged.items()]


def check_segments(segments: List[Segment], delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f'delta must be in (0, 1), got {delta}')
    for sigma, q, _ in segments:
        if not 0 < q <= 1:
            raise ValueError(f'sample_rate must be in (0, 1], got {q}')
        if sigma < 0:
            raise ValueError(f'noise_multiplier must be >= 0, got {sigma}')


def epsilon_rdp(segments: Iterable[Sequence], delta: float) -> float:
    """Epsilon from Opacus' RDP analysis (an upper bound, looser than PRV)."""
    segments = merge_segments(segments)
    check_segments(segments, delta)
    if not segments:
        return 0.0
    if any(s.noise_multiplier == 0 for s in segments):
        return math.inf
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(
        rdp_analysis.compute_rdp(
            q=q, noise_multiplier=sigma, steps=n, orders=orders)
        for sigma, q, n in segments)
    eps, _ = rdp_analysis.get_privacy_spent(
        orders=orders, rdp=rdp, delta=delta)
    return float(eps)


class RDPEpsilon:
    """RDP epsilon of k steps of one mechanism for any k, from its one-step
    RDP curve computed once (RDP composes linearly): the same value as
    :func:`epsilon_rdp`, in microseconds, for the per-step log where the
    PRV accountant cannot discretise the mechanism."""

    def __init__(self, noise_multiplier: float, sample_rate: float):
        self.orders = RDPAccountant.DEFAULT_ALPHAS
        self._one_step = rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
            orders=self.orders)

    def epsilon(self, steps: int, delta: float) -> float:
        if steps == 0:
            return 0.0
        eps, _ = rdp_analysis.get_privacy_spent(
            orders=self.orders, rdp=self._one_step * steps, delta=delta)
        return float(eps)


class PRVEpsilon:
    """A PRV accountant built once for a maximum number of steps.

    Building the discretised PRVs is the expensive part; composing them for
    any step counts up to the maxima is one FFT power. Used for the
    per-interval log, where the same mechanisms are queried again and again.

    Args:
        segments: the mechanisms and their *maximum* step counts.
        delta: target delta.
        eps_error: absolute error of the bounds (see module docstring).
    """

    def __init__(self, segments: Iterable[Sequence], delta: float,
                 eps_error: float):
        self.segments = merge_segments(segments)
        check_segments(self.segments, delta)
        if any(s.noise_multiplier == 0 for s in self.segments):
            raise ValueError('noise_multiplier 0 gives no privacy; '
                             'the PRV accountant needs sigma > 0')
        self.delta = delta
        self.eps_error = eps_error
        self._accountant = None
        if self.segments:
            prvs = [
                PoissonSubsampledGaussianMechanism(
                    sampling_probability=q, noise_multiplier=sigma)
                for sigma, q, _ in self.segments
            ]
            self._accountant = PRVAccountant(
                prvs=prvs,
                eps_error=eps_error,
                delta_error=delta * RELATIVE_DELTA_ERROR,
                max_self_compositions=[s.steps for s in self.segments])

    def bounds(self, steps: Optional[Sequence[int]] = None
               ) -> Tuple[float, float, float]:
        """(lower, estimate, upper) epsilon for ``steps`` per segment
        (default: the maxima)."""
        if self._accountant is None:
            return 0.0, 0.0, 0.0
        if steps is None:
            steps = [s.steps for s in self.segments]
        if all(n == 0 for n in steps):
            return 0.0, 0.0, 0.0
        # prv-accountant cannot compose a PRV zero times; drop those.
        keep = [i for i, n in enumerate(steps) if n > 0]
        if len(keep) < len(steps):
            return PRVEpsilon([(self.segments[i].noise_multiplier,
                                self.segments[i].sample_rate, steps[i])
                               for i in keep], self.delta,
                              self.eps_error).bounds()
        return tuple(
            float(e)
            for e in self._accountant.compute_epsilon(self.delta, list(steps)))

    def upper(self, steps: Optional[Sequence[int]] = None) -> float:
        return self.bounds(steps)[2]


def epsilon_prv(segments: Iterable[Sequence],
                delta: float,
                relative_error: float = RELATIVE_EPS_ERROR) -> float:
    """PRV upper bound on epsilon, within about ``2 * relative_error`` of
    the true epsilon.

    A coarse pass (error 10% of the RDP epsilon) locates epsilon; the fine
    pass uses an absolute error of ``relative_error`` times its lower bound.
    """
    segments = merge_segments(segments)
    check_segments(segments, delta)
    if not segments:
        return 0.0
    if any(s.noise_multiplier == 0 for s in segments):
        return math.inf
    eps_rdp = epsilon_rdp(segments, delta)
    coarse = prv_bounds(segments, delta,
                        max(COARSE_RELATIVE_EPS_ERROR * eps_rdp, 1e-4))
    if coarse is not None:
        lower, estimate, _ = coarse
        scale = lower if lower > 0 else estimate
        fine = prv_bounds(segments, delta, max(relative_error * scale, 1e-5))
        if fine is not None:
            return fine[2]
    warnings.warn(
        f'the PRV accountant cannot discretise {segments} (small noise '
        'multipliers make its privacy random variable too heavy-tailed); '
        f'reporting the RDP upper bound {eps_rdp:.4f} instead')
    return eps_rdp


def prv_bounds(segments, delta: float, eps_error: float
               ) -> Optional[Tuple[float, float, float]]:
    """PRV (lower, estimate, upper), or None where prv-accountant fails
    ("Discrete mean differs from continuous mean significantly", seen for
    sigma below about 0.5 at q = 0.125)."""
    try:
        return PRVEpsilon(segments, delta, eps_error).bounds()
    except RuntimeError:
        return None
