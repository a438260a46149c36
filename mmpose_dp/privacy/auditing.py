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
import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import special, stats

#: Shares of the canaries guessed on (half "included", half "excluded") when
#: no guess counts are given; fixed before the scores are seen.
DEFAULT_GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
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


def _check_delta(delta: float) -> None:
    if not 0 <= delta <= 1:
        raise ValueError(f'delta must be in [0, 1], got {delta}')


def _check_confidence(confidence: float) -> None:
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
    _check_delta(delta)
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
    _check_confidence(confidence)

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
    while high - low > EPSILON_TOLERANCE:
        middle = (low + high) / 2
        if rejected(middle):
            low = middle
        else:
            high = middle
    return low


@dataclasses.dataclass(frozen=True)
class OneRunAudit:
    """The best one-run audit over several guess settings.

    Attributes:
        epsilon: Lower bound on epsilon, corrected for having picked the best
            of ``num_settings`` settings.
        num_guesses: r of the chosen setting.
        num_correct: v of the chosen setting.
        num_positive_guesses: Canaries guessed "included" (top scores).
        num_negative_guesses: Canaries guessed "excluded" (bottom scores).
        num_canaries: m.
        num_settings: Distinct guess settings tried (the Bonferroni factor).
        delta: The delta at which epsilon was audited.
        confidence: The overall confidence of ``epsilon``.
    """
    epsilon: float
    num_guesses: int
    num_correct: int
    num_positive_guesses: int
    num_negative_guesses: int
    num_canaries: int
    num_settings: int
    delta: float
    confidence: float

    def __str__(self) -> str:
        return (f'epsilon >= {self.epsilon:.3f} at delta={self.delta:g}, '
                f'{self.confidence:.0%} confidence (one-run audit, Steinke '
                f'et al. 2023: {self.num_correct}/{self.num_guesses} correct '
                f'guesses, {self.num_positive_guesses} "included" + '
                f'{self.num_negative_guesses} "excluded", of '
                f'{self.num_canaries} canaries; best of {self.num_settings} '
                'guess settings, Bonferroni-corrected)')


def _default_guess_counts(num_canaries: int) -> List[Tuple[int, int]]:
    counts = []
    for fraction in DEFAULT_GUESS_FRACTIONS:
        total = max(1, round(fraction * num_canaries))
        counts.append(((total + 1) // 2, total // 2))
    return counts


def _check_guess_counts(guess_counts: Sequence[Tuple[int, int]],
                        num_canaries: int) -> List[Tuple[int, int]]:
    distinct = []
    for setting in guess_counts:
        if len(setting) != 2:
            raise ValueError('each guess count must be a pair '
                             f'(num_positive, num_negative), got {setting!r}')
        positive, negative = setting
        for value in setting:
            if isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)) or value < 0:
                raise ValueError('guess counts must be non-negative '
                                 f'integers, got {setting!r}')
        if not 1 <= positive + negative <= num_canaries:
            raise ValueError(
                f'guess counts {setting!r} must make between 1 and '
                f'{num_canaries} (the number of canaries) guesses')
        if (int(positive), int(negative)) not in distinct:
            distinct.append((int(positive), int(negative)))
    if not distinct:
        raise ValueError('guess_counts must name at least one setting')
    return distinct


def audit_from_scores(
        scores: Sequence[float],
        included: Sequence[bool],
        delta: float,
        confidence: float = 0.95,
        guess_counts: Optional[Sequence[Tuple[int, int]]] = None
) -> OneRunAudit:
    """Audit epsilon from per-canary scores and their true inclusion.

    For each setting ``(k_plus, k_minus)`` the auditor guesses "included" for
    the ``k_plus`` highest scores and "excluded" for the ``k_minus`` lowest
    (ties broken by canary order) and abstains on the rest. Picking the best
    of K settings after seeing the outcome is paid for with a union bound:
    each setting is audited at confidence ``1 - (1 - confidence) / K``. The
    settings must be fixed before the inclusion bits are looked at.

    Args:
        scores: One finite score per canary; higher means more likely
            included.
        included: Whether each canary was included (bool or 0/1).
        delta: The delta at which epsilon is audited, in [0, 1].
        confidence: Overall confidence of the returned lower bound.
        guess_counts: ``(k_plus, k_minus)`` pairs to try, each with
            ``1 <= k_plus + k_minus <= m``; duplicates count once. Defaults
            to balanced settings guessing on ``DEFAULT_GUESS_FRACTIONS`` of
            the canaries.

    Returns:
        The setting with the largest corrected lower bound (the first one on
        ties), as a :class:`OneRunAudit`.

    Raises:
        ValueError: On scores and inclusion bits of different or zero
            length, non-finite scores, non-binary inclusion bits, or guess
            counts, delta or confidence out of range.
    """
    scores = np.asarray(scores, dtype=float)
    included = np.asarray(included)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError('scores must be a non-empty 1-D sequence, got shape '
                         f'{scores.shape}')
    if included.shape != scores.shape:
        raise ValueError(f'included has shape {included.shape} but scores '
                         f'has shape {scores.shape}: one bit per canary')
    if not np.all(np.isfinite(scores)):
        raise ValueError('scores must be finite (no NaN or inf)')
    if not np.all((included == 0) | (included == 1)):
        raise ValueError('included must hold only booleans or 0/1')
    _check_delta(delta)
    _check_confidence(confidence)
    num_canaries = int(scores.size)
    settings = _check_guess_counts(
        _default_guess_counts(num_canaries)
        if guess_counts is None else guess_counts, num_canaries)

    per_setting_confidence = 1 - (1 - confidence) / len(settings)
    ranked = included[np.argsort(scores, kind='stable')].astype(bool)
    best = None
    for positive, negative in settings:
        correct = int(ranked[num_canaries - positive:].sum() +
                      (~ranked[:negative]).sum())
        guesses = positive + negative
        epsilon = epsilon_lower_bound(num_canaries, guesses, correct, delta,
                                      per_setting_confidence)
        if best is None or epsilon > best.epsilon:
            best = OneRunAudit(epsilon, guesses, correct, positive, negative,
                               num_canaries, len(settings), delta,
                               confidence)
    return best
