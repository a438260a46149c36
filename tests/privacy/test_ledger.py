import pytest

from mmpose_dp.privacy import accounting
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


def test_a_ledger_of_another_mechanism_or_version_is_refused():
    from mmpose_dp.privacy import NotPrivateError
    state = PrivacyLedger(1e-5).state_dict()
    assert state['mechanism'] == 'poisson_subsampled_gaussian'
    for change in (dict(mechanism='fixed_batch_gaussian'), dict(version=0),
                   dict(mechanism=None, version=None)):
        with pytest.raises(NotPrivateError, match='cannot be continued'):
            PrivacyLedger(1e-5).load_state_dict(dict(state, **change))


def test_tracker_epsilon_is_an_upper_bound_without_a_new_accountant(
        monkeypatch):
    ledger = PrivacyLedger(1e-5)
    tracker = EpsilonTracker(ledger, 1.5, 0.04, planned_steps=2250)
    for _ in range(1000):
        ledger.step(1.5, 0.04)
    # Within the plan a query reuses the accountant built once (one FFT
    # power); building a new one (the slow part) would fail here.
    built = []
    real = accounting.PRVAccountant
    monkeypatch.setattr(accounting, 'PRVAccountant',
                        lambda *a, **k: built.append(1) or real(*a, **k))
    eps = tracker.epsilon()
    assert tracker.epsilon_after(1250) >= eps
    assert built == []
    monkeypatch.undo()
    exact = epsilon_prv(ledger.segments, 1e-5)
    assert exact * 0.98 <= eps <= exact * 1.05 + 0.01


def test_tracker_falls_back_when_the_ledger_leaves_the_plan():
    ledger = PrivacyLedger(1e-5)
    tracker = EpsilonTracker(ledger, 1.5, 0.04, planned_steps=10)
    for _ in range(20):
        ledger.step(1.5, 0.04)
    assert tracker.epsilon() == pytest.approx(ledger.epsilon())


def test_tracker_without_prv_gives_the_rdp_bound_without_recomputing(
        monkeypatch):
    # sigma 0.6165 at q = 1/8: the PRV accountant cannot discretise it, so
    # the log's epsilon is RDP; from the one-step curve, not a PRV attempt
    # and a fresh RDP analysis at every step (1.4 s per step on HRNet runs).
    from mmpose_dp.privacy import accounting
    from mmpose_dp.privacy.ledger import EpsilonTracker
    ledger = PrivacyLedger(1.5625e-3)
    tracker = EpsilonTracker(ledger, 0.6165, 0.125, 16, 8.0)
    assert tracker._prv is None
    monkeypatch.setattr(accounting, 'prv_bounds', _no_call)
    for steps in (1, 5, 16):
        while ledger.steps < steps:
            ledger.step(0.6165, 0.125)
        want = accounting.epsilon_rdp([(0.6165, 0.125, steps)], 1.5625e-3)
        assert tracker.epsilon() == pytest.approx(want, rel=1e-12)
    assert tracker.epsilon_after(4) == pytest.approx(accounting.epsilon_rdp(
        [(0.6165, 0.125, 20)], 1.5625e-3), rel=1e-12)


def _no_call(*args, **kwargs):
    raise AssertionError('the tracker rebuilt a PRV accountant')
