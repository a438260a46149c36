"""A one-run privacy audit from canary scores (Steinke, Nasr, Jagielski
2023): the best of several fixed guess settings, each bounded by
:func:`epsilon_lower_bound` (:mod:`.audit_bound`), Bonferroni-corrected.
Pure numpy: no torch, no MMEngine."""
import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .audit_bound import (check_confidence, check_delta, correct_guess_tail,
                          epsilon_lower_bound)

__all__ = ['OneRunAudit', 'audit_from_scores', 'correct_guess_tail',
           'epsilon_lower_bound']

#: Shares of the canaries guessed on (half "included", half "excluded") when
#: no guess counts are given; fixed before the scores are seen.
DEFAULT_GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


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
    check_delta(delta)
    check_confidence(confidence)
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
