import time

import pytest

from mmpose_dp.privacy import EpsilonTracker, PrivacyLedger, epsilon_prv


def test_ledger_counts_steps_in_segments():
    ledger = PrivacyLedger(1e-5)
    for _ in range(3):
        ledger.step(1.5, 0.04)
    ledger.step(2.0, 0.04)
    assert ledger.steps == 4
    assert [tuple(s) for s in ledger.segments] == [(1.5, 0.04, 3),
                                                   (2.0, 0.04, 1)]


def test_ledger_round_trips_through_state_dict():
    ledger = PrivacyLedger(1e-5)
    for _ in range(10):
        ledger.step(1.5, 0.04)
    restored = PrivacyLedger(0.5)
    restored.load_state_dict(ledger.state_dict())
    assert restored.delta == 1e-5
    assert restored.segments == ledger.segments
    assert restored.epsilon() == pytest.approx(ledger.epsilon())


def test_tracker_epsilon_is_an_upper_bound_and_fast():
    ledger = PrivacyLedger(1e-5)
    tracker = EpsilonTracker(ledger, 1.5, 0.04, planned_steps=2250)
    for _ in range(1000):
        ledger.step(1.5, 0.04)
    start = time.time()
    eps = tracker.epsilon()
    assert time.time() - start < 1.0
    exact = epsilon_prv(ledger.segments, 1e-5)
    assert exact * 0.98 <= eps <= exact * 1.05 + 0.01


def test_tracker_falls_back_when_the_ledger_leaves_the_plan():
    ledger = PrivacyLedger(1e-5)
    tracker = EpsilonTracker(ledger, 1.5, 0.04, planned_steps=10)
    for _ in range(20):
        ledger.step(1.5, 0.04)
    assert tracker.epsilon() == pytest.approx(ledger.epsilon())
