"""Epsilon lower bounds from one training run (Steinke, Nasr, Jagielski 2023).

"Privacy Auditing with One (1) Training Run", NeurIPS 2023, arXiv 2305.08846.
``m`` canaries are each included independently with probability 1/2. After
training, an auditor guesses "included" for some canaries, "excluded" for
others and abstains on the rest; ``r`` guesses are made, ``v`` are correct.
The paper's main theorem (Theorem 3.1) says that if training is
(eps, delta)-DP then, with ``f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v]``,

    P[#correct >= v] <= f(v) + 2 m delta * max_{i=1..m} (f(v - i) - f(v)) / i.

Observing ``v`` correct guesses therefore rules out, at confidence ``1 - p``,
every eps whose right-hand side is at most ``p``; the largest such eps is the
audited lower bound. Pure numpy/scipy: no torch, no MMEngine.
"""
import math

import numpy as np
from scipy import special, stats

from .bisection import bisect

#: Width of the final bisection bracket on epsilon.
EPSILON_TOLERANCE = 1e-6


def _check_counts(num_canaries: int, num_guesses: int,
                  num_correct: int) -> None:
    for name, value in (('num_canaries', num_canaries),
                        ('num_guesses', num_guesses),
                        ('num_correct', num_correct)):
        if isinstance(value, bool) or not isinstance(value,
                                                     (int, np.integer)):
            raise ValueError(f'{name} must be an integer, got {value!r}')
    if not 0 <= num_correct <= num_guesses <= num_canaries:
        raise ValueError(
            'need 0 <= num_correct <= num_guesses <= num_canaries, got '
            f'num_correct={num_correct}, num_guesses={num_guesses}, '
            f'num_canaries={num_canaries}')


def check_delta(delta: float) -> None:
    if not 0 <= delta <= 1:
        raise ValueError(f'delta must be in [0, 1], got {delta}')


def check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')


def correct_guess_tail(epsilon: float, delta: float, num_canaries: int,
                       num_guesses: int, num_correct: int) -> float:
    """Bound on P[at least ``num_correct`` of the guesses are right].

    Theorem 3.1 of Steinke et al. (2023): for an (epsilon, delta)-DP
    mechanism, ``num_canaries`` (m) canaries included independently with
    probability 1/2 and an auditor making ``num_guesses`` (r) guesses, the
    number of correct guesses W satisfies, with
    ``f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v]``,
    ``P[W >= v] <= f(v) + 2 m delta max_{1<=i<=m} (f(v - i) - f(v)) / i``.

    Args:
        epsilon: The epsilon of the null hypothesis, >= 0.
        delta: The delta of the null hypothesis, in [0, 1].
        num_canaries: m, the number of canaries (guessed on or not).
        num_guesses: r, the guesses made (abstentions excluded).
        num_correct: v, the correct guesses.

    Returns:
        The bound, capped at 1: a p-value for "the mechanism is
        (epsilon, delta)-DP" after observing ``num_correct`` correct guesses.

    Raises:
        ValueError: If the counts are not integers with
            ``0 <= num_correct <= num_guesses <= num_canaries``, or epsilon or
            delta is out of range.
    """
    _check_counts(num_canaries, num_guesses, num_correct)
    check_delta(delta)
    if not 0 <= epsilon < math.inf:
        raise ValueError(f'epsilon must be finite and >= 0, got {epsilon}')
    if num_correct == 0:
        return 1.0
    accuracy = float(special.expit(epsilon))  # e^eps / (1 + e^eps)
    tail = float(stats.binom.sf(num_correct - 1, num_guesses, accuracy))
    if delta == 0:
        return min(tail, 1.0)
    # f(v - i) - f(v) = P[v - i <= W' <= v - 1]: cumulative pmf from v - 1
    # down. For i >= v, f(v - i) = 1, so the ratio (1 - f(v)) / i only falls
    # as i grows: the maximum over 1..m is attained at some i <= v.
    below = stats.binom.pmf(
        np.arange(num_correct - 1, -1, -1), num_guesses, accuracy)
    gaps = np.cumsum(below) / np.arange(1, num_correct + 1)
    return min(tail + 2 * num_canaries * delta * float(gaps.max()), 1.0)


def epsilon_lower_bound(num_canaries: int,
                        num_guesses: int,
                        num_correct: int,
                        delta: float,
                        confidence: float = 0.95) -> float:
    """The largest epsilon that ``num_correct`` of ``num_guesses`` rules out.

    Bisection on epsilon for the point where :func:`correct_guess_tail`
    crosses ``1 - confidence`` (Steinke et al. 2023, Appendix D). The search
    keeps ``tail(lo) <= 1 - confidence``, so the returned epsilon is always
    rejected; and an (eps', delta)-DP mechanism with eps' below it is also
    (eps, delta)-DP, so every smaller epsilon is ruled out too.

    Args:
        num_canaries: m, the number of canaries.
        num_guesses: r, the guesses made (abstentions excluded).
        num_correct: v, the correct guesses.
        delta: The delta at which epsilon is audited, in [0, 1].
        confidence: Probability, over the canaries' inclusion, that the
            returned value does not exceed the mechanism's true epsilon.

    Returns:
        The audited lower bound on epsilon (0.0 if nothing is ruled out),
        accurate to ``EPSILON_TOLERANCE`` from below.

    Raises:
        ValueError: On counts, delta or confidence out of range.
    """
    check_confidence(confidence)

    def rejected(epsilon: float) -> bool:
        return correct_guess_tail(epsilon, delta, num_canaries, num_guesses,
                                  num_correct) <= 1 - confidence

    if not rejected(0.0):
        return 0.0
    # The tail tends to 1 as epsilon grows (guesses become certain), so the
    # doubling stops; expit(eps) rounds to 1.0 beyond eps ~ 37.
    low, high = 0.0, 1.0
    while rejected(high):
        low, high = high, 2 * high
    # The largest epsilon still rejected: the failing end of the bracket.
    return bisect(lambda e: not rejected(e), low, high, EPSILON_TOLERANCE,
                  relative=False)[0]
