"""No path spends past the budget: fresh, resumed, changed plan, explicit
sigma."""
import pytest

from mmpose_dp.privacy import (NotPrivateError, Segment, epsilon_prv,
                               plan_noise, steps_within_budget)
from mmpose_dp.privacy.plan import PrivacyPlan

DELTA, Q = 1 / 640, 0.25  # the tiny test setting: 64 records, batch 16


def _stored(**budget) -> PrivacyPlan:
    """The plan a checkpoint would store, with these budget fields."""
    return PrivacyPlan(
        unit='image', n_private=64, private_data=None, max_grad_norm=1.0,
        method='DP-SGD', labels_public=False, privacy_unit='an image',
        protected='everything', public='nothing', **budget)


def _spent(prior, plan, taken):
    new = plan.allowed_steps - taken
    return epsilon_prv(list(prior) + [Segment(plan.noise_multiplier, Q, new)],
                       DELTA)


def test_explicit_sigma_is_bounded_by_the_budget():
    plan = plan_noise(8.0, 0.5257, DELTA, Q, remaining=8)
    assert plan.source == 'config'
    assert 0 < plan.allowed_steps < 8
    assert _spent([], plan, 0) <= 8.0
    one_more = epsilon_prv([(0.5257, Q, plan.allowed_steps + 1)], DELTA)
    assert one_more > 8.0


def test_resuming_an_explicit_sigma_run_without_it_does_not_overspend():
    # The reviewed bug: a run with sigma 0.5257 stopped at its budget; its
    # resume with noise_multiplier=None took the "same plan" branch, reused
    # 0.5257 as if calibrated and went on to epsilon 10.95.
    first = plan_noise(8.0, 0.5257, DELTA, Q, remaining=8)
    taken = first.allowed_steps
    prior = [Segment(0.5257, Q, taken)]
    stored = _stored(target_epsilon=8.0, delta=DELTA, sample_rate=Q,
                     total_steps=8, noise_multiplier=0.5257,
                     sigma_source=first.source)
    try:
        resumed = plan_noise(8.0, None, DELTA, Q, remaining=8 - taken,
                             prior=prior, resumed_plan=stored)
    except NotPrivateError as err:  # or nothing is left to spend
        assert 'spent' in str(err)
        return
    assert resumed.noise_multiplier != 0.5257
    assert _spent(prior, resumed, taken) <= 8.0


def test_a_calibrated_plan_is_kept_on_resume_and_fits():
    first = plan_noise(4.0, None, DELTA, Q, remaining=8)
    assert first.source == 'calibrated' and first.allowed_steps == 8
    prior = [Segment(first.noise_multiplier, Q, 3)]
    stored = _stored(target_epsilon=4.0, delta=DELTA, sample_rate=Q,
                     total_steps=8, noise_multiplier=first.noise_multiplier,
                     sigma_source='calibrated')
    resumed = plan_noise(4.0, None, DELTA, Q, remaining=5, prior=prior,
                         resumed_plan=stored)
    assert resumed.noise_multiplier == first.noise_multiplier
    assert resumed.allowed_steps == 8
    assert _spent(prior, resumed, 3) <= 4.0


def test_a_changed_plan_is_calibrated_for_the_rest_of_the_budget():
    prior = [Segment(2.0, Q, 4)]
    plan = plan_noise(6.0, None, DELTA, 0.5, remaining=6, prior=prior)
    assert plan.allowed_steps == 10
    assert epsilon_prv(prior + [Segment(plan.noise_multiplier, 0.5, 6)],
                       DELTA) <= 6.0


def test_a_spent_budget_is_refused():
    prior = [Segment(0.6, Q, 20)]
    assert epsilon_prv(prior, DELTA) > 3.0
    with pytest.raises(NotPrivateError, match='spent'):
        plan_noise(3.0, 1.0, DELTA, Q, remaining=5, prior=prior)
    with pytest.raises(NotPrivateError, match='spent'):
        plan_noise(3.0, None, DELTA, Q, remaining=5, prior=prior)


def test_no_noise_with_a_budget_is_refused():
    with pytest.raises(NotPrivateError, match='no privacy'):
        plan_noise(8.0, 0.0, DELTA, Q, remaining=4)
    assert plan_noise(None, 0.0, DELTA, Q, remaining=4).allowed_steps is None


def test_steps_within_budget_is_the_largest_that_fits():
    n = steps_within_budget([], 1.0, Q, 50, 3.0, DELTA)
    assert epsilon_prv([(1.0, Q, n)], DELTA) <= 3.0 < epsilon_prv(
        [(1.0, Q, n + 1)], DELTA)


def test_the_plan_round_trips_and_refuses_another_version_or_a_gap():
    plan = _stored(target_epsilon=4.0, delta=DELTA, sample_rate=Q,
                   total_steps=8, noise_multiplier=1.2,
                   sigma_source='calibrated',
                   batch_norm=dict(mode='freeze', layers=3),
                   public_set=dict(id='abc', images=2, records=5))
    state = plan.to_dict()
    assert state['version'] == PrivacyPlan.VERSION
    assert PrivacyPlan.from_dict(state) == plan
    assert plan.batch_norm_mode == 'freeze' and plan.public_set_id == 'abc'
    with pytest.raises(NotPrivateError, match='version 2'):
        PrivacyPlan.from_dict(dict(state, version=2))
    gap = dict(state)
    del gap['noise_multiplier']
    with pytest.raises(NotPrivateError, match='noise_multiplier'):
        PrivacyPlan.from_dict(gap)
    assert plan.replace(engine='fast').engine == 'fast' and plan.engine is None
