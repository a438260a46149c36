"""One-run auditing (Steinke, Nasr, Jagielski 2023, arXiv 2305.08846)."""
import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from mmpose_dp.privacy.auditing import (OneRunAudit, audit_from_scores,
                                        correct_guess_tail,
                                        epsilon_lower_bound)


def binomial_tail(r: int, q: float, v: int) -> float:
    """P[Binomial(r, q) >= v], summed term by term."""
    return sum(
        math.comb(r, k) * q**k * (1 - q)**(r - k) for k in range(v, r + 1))


def theorem_bound(eps: float, delta: float, m: int, r: int, v: int) -> float:
    """Theorem 3.1 as stated: f(v) + 2m delta max_{1<=i<=m} (f(v-i)-f(v))/i."""
    q = math.exp(eps) / (1 + math.exp(eps))
    f = [binomial_tail(r, q, x) for x in range(v + 1)]  # f(x <= 0) = 1
    growth = max((f[max(v - i, 0)] - f[v]) / i for i in range(1, m + 1))
    return min(f[v] + 2 * m * delta * growth, 1.0)


def randomized_response(rng, num_canaries, epsilon):
    """Inclusion bits and eps-DP randomized-response scores for them."""
    included = rng.random(num_canaries) < 0.5
    truthful = rng.random(num_canaries) < special.expit(epsilon)
    response = np.where(truthful, included, ~included)
    # Tie-breaking noise is independent of the bits: still eps-DP.
    return response + 0.5 * rng.random(num_canaries), included


@pytest.mark.parametrize('eps', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('v', [20, 30, 38])
def test_tail_without_delta_is_the_binomial_tail(eps, v):
    q = math.exp(eps) / (1 + math.exp(eps))
    assert correct_guess_tail(eps, 0.0, 60, 40, v) == pytest.approx(
        binomial_tail(40, q, v), rel=1e-9)


@pytest.mark.parametrize('eps', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('v', [1, 20, 30, 38])
def test_tail_with_delta_matches_the_theorem_maximised_over_all_i(eps, v):
    # The theorem maximises over i up to m = 60 > v; the module stops at v.
    assert correct_guess_tail(eps, 1e-3, 60, 40, v) == pytest.approx(
        theorem_bound(eps, 1e-3, 60, 40, v), rel=1e-9)


def test_delta_adds_to_the_tail():
    pure = correct_guess_tail(1.0, 0.0, 1000, 100, 80)
    assert correct_guess_tail(1.0, 1e-4, 1000, 100, 80) > pure


def test_tail_is_a_probability():
    assert correct_guess_tail(1.0, 0.5, 100, 50, 40) == 1.0
    assert correct_guess_tail(3.0, 1e-5, 100, 50, 0) == 1.0


def test_all_correct_guesses_give_the_closed_form_bound():
    # delta = 0, v = r: q^r = 0.05 gives eps = logit(0.05 ** (1 / r)),
    # 3.4930 for r = 100: the ceiling of 100 perfect guesses at 95%.
    expected = special.logit(0.05**(1 / 100))
    assert expected == pytest.approx(3.4930, abs=1e-4)
    assert epsilon_lower_bound(1000, 100, 100, 0.0) == pytest.approx(
        expected, abs=2e-6)


@pytest.mark.parametrize('confidence', [0.9, 0.95, 0.99])
def test_bound_without_delta_inverts_the_scipy_binomial_tail(confidence):
    m, r, v = 1000, 500, 330

    def excess(eps):
        return stats.binom.sf(v - 1, r, special.expit(eps)) - (1 - confidence)

    expected = optimize.brentq(excess, 0.0, 10.0, xtol=1e-10)
    eps = epsilon_lower_bound(m, r, v, 0.0, confidence)
    assert eps == pytest.approx(expected, abs=2e-6)
    assert eps <= expected


def test_bound_with_delta_is_the_largest_rejected_epsilon():
    m, r, v, delta = 1000, 400, 330, 1e-5
    eps = epsilon_lower_bound(m, r, v, delta)
    assert eps > 1.0
    assert theorem_bound(eps, delta, m, r, v) <= 0.05
    assert theorem_bound(eps + 1e-4, delta, m, r, v) > 0.05


def test_delta_lowers_the_bound():
    assert epsilon_lower_bound(1000, 500, 400, 1e-3) < \
        epsilon_lower_bound(1000, 500, 400, 0.0)


def test_more_correct_guesses_give_a_larger_bound():
    bounds = [epsilon_lower_bound(1000, 500, v, 1e-5)
              for v in range(250, 501, 25)]
    assert bounds[0] == 0.0  # half right is chance level
    positive = [b for b in bounds if b > 0]
    assert len(positive) >= 8
    assert all(a < b for a, b in zip(positive, positive[1:]))


def test_chance_level_guessing_rules_out_nothing():
    assert epsilon_lower_bound(1000, 1000, 500, 0.0) == 0.0
    assert epsilon_lower_bound(1000, 1000, 0, 0.0) == 0.0


def test_randomized_response_bound_rarely_exceeds_its_epsilon():
    # A valid 95% lower bound exceeds the true eps in <= 5% of runs
    # (10 of 200 expected; 20 or more has probability ~0.1% if valid).
    rng = np.random.default_rng(0)
    epsilon, num_canaries = 1.0, 500
    bounds = []
    for _ in range(200):
        scores, included = randomized_response(rng, num_canaries, epsilon)
        audit = audit_from_scores(
            scores, included, delta=0.0, guess_counts=[(250, 250)])
        bounds.append(audit.epsilon)
    bounds = np.array(bounds)
    assert np.sum(bounds > epsilon) < 20
    # ...and it is informative: close to eps, not stuck at 0.
    assert bounds.mean() > 0.6 * epsilon


def test_non_private_mechanism_gets_a_large_bound():
    rng = np.random.default_rng(1)
    included = rng.random(1000) < 0.5
    scores = included + 0.5 * rng.random(1000)  # scores reveal inclusion
    audit = audit_from_scores(scores, included, delta=1e-5)
    # Guessing on all 1000 would force ~10 errors (the included count is not
    # exactly 500); the chosen setting is the largest that is all correct.
    assert audit.num_correct == audit.num_guesses == 500
    assert audit.epsilon > 4.0


def test_choosing_among_settings_costs_a_union_bound():
    rng = np.random.default_rng(2)
    scores, included = randomized_response(rng, 1000, 2.0)
    settings = [(25, 25), (50, 50), (150, 150), (500, 500)]
    audit = audit_from_scores(scores, included, 1e-5, 0.95, settings)
    single = epsilon_lower_bound(1000, audit.num_guesses, audit.num_correct,
                                 1e-5, 0.95)
    assert audit.num_settings == 4
    assert audit.epsilon < single
    assert audit.epsilon == epsilon_lower_bound(
        1000, audit.num_guesses, audit.num_correct, 1e-5, 1 - 0.05 / 4)
    chosen = [(audit.num_positive_guesses, audit.num_negative_guesses)]
    alone = audit_from_scores(scores, included, 1e-5, 0.95, chosen)
    assert alone.num_settings == 1
    assert alone.epsilon == single


def test_audit_picks_the_setting_with_the_largest_bound():
    rng = np.random.default_rng(3)
    scores, included = randomized_response(rng, 400, 1.5)
    settings = [(5, 5), (20, 20), (100, 100), (200, 200)]
    audit = audit_from_scores(scores, included, 1e-5, 0.9, settings)
    order = np.argsort(scores, kind='stable')
    bounds = []
    for positive, negative in settings:
        correct = included[order[400 - positive:]].sum() + \
            (~included[order[:negative]]).sum()
        bounds.append(
            epsilon_lower_bound(400, positive + negative, int(correct), 1e-5,
                                1 - 0.1 / 4))
    best = int(np.argmax(bounds))
    assert audit.epsilon == bounds[best] > 0
    assert (audit.num_positive_guesses,
            audit.num_negative_guesses) == settings[best]


def test_audit_counts_top_scores_as_included_and_bottom_as_excluded():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    included = [0, 0, 1, 0, 1, 1, 0, 1]
    # Guess in: canaries 6, 7 (one right); out: canaries 0, 1, 2 (two right).
    audit = audit_from_scores(scores, included, 0.0, guess_counts=[(2, 3)])
    assert (audit.num_guesses, audit.num_correct) == (5, 3)
    assert (audit.num_positive_guesses, audit.num_negative_guesses) == (2, 3)
    # Shuffling the canaries (scores with their bits) changes nothing.
    perm = [3, 7, 0, 5, 1, 6, 2, 4]
    shuffled = audit_from_scores(
        np.array(scores)[perm], np.array(included)[perm], 0.0,
        guess_counts=[(2, 3)])
    assert shuffled.num_correct == 3


def test_duplicate_settings_are_tried_once():
    scores, included = np.arange(10.0), np.arange(10) >= 5
    audit = audit_from_scores(scores, included, 0.0,
                              guess_counts=[(2, 2), (2, 2)])
    assert audit.num_settings == 1


def test_audit_reports_what_produced_the_number():
    scores, included = np.arange(100.0), np.arange(100) >= 50
    audit = audit_from_scores(scores, included, 1e-5,
                              guess_counts=[(50, 50)])
    assert isinstance(audit, OneRunAudit)
    text = str(audit)
    assert f'{audit.epsilon:.3f}' in text
    assert '100/100 correct' in text and 'delta=1e-05' in text
    assert '95% confidence' in text and '1 guess settings' in text


@pytest.mark.parametrize('args, message', [
    ((1.0, 0.0, 10, 5, 6), 'num_correct <= num_guesses'),
    ((1.0, 0.0, 10, 11, 3), 'num_guesses <= num_canaries'),
    ((1.0, 0.0, 10, 5, -1), '0 <= num_correct'),
    ((1.0, 0.0, 10, 5.0, 3), 'num_guesses must be an integer'),
    ((-0.1, 0.0, 10, 5, 3), 'epsilon must be'),
    ((math.inf, 0.0, 10, 5, 3), 'epsilon must be'),
    ((1.0, 1.5, 10, 5, 3), 'delta must be in'),
    ((1.0, -1e-9, 10, 5, 3), 'delta must be in'),
])
def test_tail_rejects_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        correct_guess_tail(*args)


@pytest.mark.parametrize('confidence', [0.0, 1.0, 95])
def test_bound_rejects_confidence_outside_the_unit_interval(confidence):
    with pytest.raises(ValueError, match='confidence must be in'):
        epsilon_lower_bound(100, 50, 40, 1e-5, confidence)


@pytest.mark.parametrize('scores, included, kwargs, message', [
    ([1.0, 2.0], [True], {}, 'one bit per canary'),
    ([], [], {}, 'non-empty'),
    ([1.0, float('nan')], [True, False], {}, 'finite'),
    ([1.0, 2.0], [2, 0], {}, 'booleans or 0/1'),
    ([1.0, 2.0], [1, 0], dict(guess_counts=[(2, 1)]), 'between 1 and 2'),
    ([1.0, 2.0], [1, 0], dict(guess_counts=[(0, 0)]), 'between 1 and 2'),
    ([1.0, 2.0], [1, 0], dict(guess_counts=[(-1, 2)]), 'non-negative'),
    ([1.0, 2.0], [1, 0], dict(guess_counts=[(1,)]), 'must be a pair'),
    ([1.0, 2.0], [1, 0], dict(guess_counts=[]), 'at least one setting'),
    ([1.0, 2.0], [1, 0], dict(delta=2.0), 'delta must be in'),
    ([1.0, 2.0], [1, 0], dict(confidence=1.0), 'confidence must be in'),
])
def test_audit_rejects_bad_inputs(scores, included, kwargs, message):
    kwargs = {'delta': 1e-5, **kwargs}
    with pytest.raises(ValueError, match=message):
        audit_from_scores(scores, included, **kwargs)
