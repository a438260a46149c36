"""Noise calibration: the smallest sigma that meets a target epsilon."""
from typing import Iterable, Sequence

from .accounting import (RELATIVE_EPS_ERROR, Segment, check_segments,
                         epsilon_prv, epsilon_rdp, merge_segments, prv_bounds)
from .bisection import bisect
from .errors import NotPrivateError


def calibrate_noise_multiplier(target_epsilon: float,
                               delta: float,
                               sample_rate: float,
                               steps: int,
                               prior_segments: Iterable[Sequence] = (),
                               relative_error: float = RELATIVE_EPS_ERROR,
                               sigma_tolerance: float = 2e-3) -> float:
    """Smallest noise multiplier (to ``sigma_tolerance``, relative) whose
    PRV upper bound after ``prior_segments`` plus ``steps`` steps at
    ``sample_rate`` is at most ``target_epsilon``.

    Coarse-then-fine: a bisection on the cheap coarse estimate brackets
    sigma; the fine upper bound (the one that is reported) then decides.
    """
    if target_epsilon <= 0:
        raise ValueError(f'target_epsilon must be > 0, got {target_epsilon}')
    if steps <= 0:
        raise ValueError(f'steps must be > 0, got {steps}')
    prior = merge_segments(prior_segments)
    check_segments(prior + [Segment(1.0, sample_rate, steps)], delta)
    spent = epsilon_prv(prior, delta, relative_error) if prior else 0.0
    if spent >= target_epsilon:
        raise NotPrivateError(
            f'the budget epsilon={target_epsilon} is already spent by '
            f'the earlier steps of this run; no further step is possible')
    # The coarse error must resolve what is left of the budget.
    margin = target_epsilon - spent

    def run(sigma):
        return prior + [Segment(sigma, sample_rate, steps)]

    def coarse_estimate(sigma):
        eps_rdp = epsilon_rdp(run(sigma), delta)
        error = max(min(0.05 * eps_rdp, 0.2 * margin), 1e-4)
        bounds = prv_bounds(run(sigma), delta, error)
        return eps_rdp if bounds is None else bounds[1]

    def fits(sigma):
        return epsilon_prv(run(sigma), delta, relative_error) <= target_epsilon

    # Bracket: lo fails, hi passes (on the coarse estimate).
    lo, hi = 0.1, 1.0
    while coarse_estimate(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(
                f'no noise multiplier below 1e4 reaches epsilon '
                f'{target_epsilon} with q={sample_rate}, steps={steps}')
    while coarse_estimate(lo) <= target_epsilon and lo > 1e-3:
        lo, hi = lo / 2, lo
    while hi - lo > sigma_tolerance * hi:
        mid = (lo + hi) / 2
        if coarse_estimate(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    # Fine pass: the reported upper bound must meet the target. It sits
    # about relative_error above the estimate, so try one step higher; if
    # that fails, gallop up and bisect on the upper bound.
    sigma = hi * (1 + relative_error)
    if fits(sigma):
        return sigma
    low, step = sigma, max(relative_error, sigma_tolerance)
    for _ in range(40):
        step *= 2
        high = sigma * (1 + step)
        if fits(high):
            break
        low = high
    else:
        raise RuntimeError('noise calibration did not converge')
    return bisect(fits, low, high, sigma_tolerance)[1]
