"""How much noise a run uses and how many steps its budget allows.

One rule on every path (fresh run, resume, changed plan, explicit sigma):
no step may be taken that would make the spent epsilon exceed the target.
``plan_noise`` is a pure function of the run's settings and its ledger.
"""
from typing import NamedTuple, Optional, Sequence

from .accounting import Segment, epsilon_prv, merge_segments
from .errors import NotPrivateError
from .ledger import EpsilonTracker, PrivacyLedger
from .mechanisms import GaussianMechanism, Mechanism
from .plan import PrivacyPlan

#: How the noise multiplier of a plan was obtained.
CALIBRATED, FROM_CONFIG = 'calibrated', 'config'


class NoisePlan(NamedTuple):
    """The noise and step limit of (the rest of) a run.

    Attributes:
        noise_multiplier: sigma for every remaining step.
        source: ``'calibrated'`` (PRV, for the target epsilon) or
            ``'config'`` (an explicit ``noise_multiplier``).
        allowed_steps: total steps (already taken + new) within the budget;
            None without a target epsilon.
        planned_epsilon: epsilon after the planned steps (PRV upper bound).
        note: how sigma was obtained, for the log.
    """
    noise_multiplier: float
    source: str
    allowed_steps: Optional[int]
    planned_epsilon: float
    note: str


def steps_within_budget(prior: Sequence[Segment], noise_multiplier: float,
                        sample_rate: float, remaining: int,
                        target_epsilon: float, delta: float,
                        mechanism: Optional[Mechanism] = None) -> int:
    """The largest n <= ``remaining`` such that ``prior`` plus n steps at
    (sigma, q) stays within ``target_epsilon``, by the PRV upper bound that
    the run reports (:func:`epsilon_prv` of the mechanism's segments)."""
    ledger = PrivacyLedger(delta, mechanism)
    ledger.segments = merge_segments(prior)

    def fits(n: int) -> bool:
        return epsilon_prv(ledger.accounted(Segment(
            noise_multiplier, sample_rate, n)), delta) <= target_epsilon

    if fits(remaining):
        return remaining
    tracker = EpsilonTracker(ledger, noise_multiplier, sample_rate, remaining)
    lo, hi = 0, remaining  # lo fits (by the tracker's bound), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tracker.epsilon_after(mid) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    # The tracker's error differs slightly from the reported bound's: step
    # back until the reported bound fits too.
    while lo > 0 and not fits(lo):
        lo -= 1
    return lo


def plan_noise(target_epsilon: Optional[float],
               noise_multiplier: Optional[float], delta: float,
               sample_rate: float, remaining: int,
               prior: Sequence[Segment] = (),
               resumed_plan: Optional[PrivacyPlan] = None,
               mechanism: Optional[Mechanism] = None) -> NoisePlan:
    """Choose sigma for the ``remaining`` steps and bound the steps by the
    budget.

    Args:
        target_epsilon: the budget, or None (then ``noise_multiplier`` is
            required and no step limit applies).
        noise_multiplier: an explicit sigma, or None to calibrate it.
        delta: target delta.
        sample_rate: q of the remaining steps.
        remaining: steps the training loop will take.
        prior: segments already in the ledger (a resumed run).
        resumed_plan: the plan stored in the resumed checkpoint; its sigma is
            kept only if it was *calibrated* for the very same plan.
        mechanism: the privacy mechanism (default DP-SGD's), whose
            accounting and calibration are used.

    Raises:
        NotPrivateError: no noise with a budget, or the budget is spent.
    """
    if target_epsilon is None and noise_multiplier is None:
        raise NotPrivateError('set privacy.target_epsilon (sigma is '
                              'calibrated) or privacy.noise_multiplier')
    mechanism = mechanism or GaussianMechanism()
    prior = merge_segments(prior)
    taken = sum(s.steps for s in prior)
    total = taken + remaining
    resumed = resumed_plan
    same_plan = resumed is not None and (
        resumed.sigma_source == CALIBRATED
        and (resumed.target_epsilon, resumed.delta, resumed.sample_rate,
             resumed.total_steps) == (target_epsilon, delta, sample_rate,
                                      total))
    # A mechanism with one sigma per run (BandMF) keeps the resumed sigma
    # when the budget and q are the same, even if the resumed run now plans
    # more steps (the budget stop bounds them).
    keep_sigma = resumed is not None and mechanism.one_noise_multiplier and (
        resumed.sigma_source == CALIBRATED
        and (resumed.target_epsilon, resumed.delta, resumed.sample_rate) ==
        (target_epsilon, delta, sample_rate))
    if noise_multiplier is not None:
        sigma, source, note = float(noise_multiplier), FROM_CONFIG, \
            'from the config'
    elif same_plan or keep_sigma:
        sigma, source = float(resumed.noise_multiplier), CALIBRATED
        note = ('calibrated (PRV) for the same plan before resuming'
                if same_plan else 'calibrated (PRV) before resuming, kept: '
                f'{mechanism!r} uses one sigma per run')
    else:
        sigma = mechanism.plan_noise_multiplier(target_epsilon, delta,
                                                sample_rate, remaining, prior)
        source, note = CALIBRATED, \
            f'calibrated (PRV) for epsilon={target_epsilon}'
    if sigma < 0:
        raise NotPrivateError(f'noise_multiplier must be >= 0, got {sigma}')
    allowed = None
    if target_epsilon is not None:
        if sigma == 0:
            raise NotPrivateError(
                'noise_multiplier=0 gives no privacy; drop target_epsilon '
                'to train without a guarantee')
        new = steps_within_budget(prior, sigma, sample_rate, remaining,
                                  target_epsilon, delta, mechanism)
        if new == 0:
            raise NotPrivateError(
                f'the budget epsilon={target_epsilon} is spent: the '
                f'{taken} steps already taken leave no room for another at '
                f'noise_multiplier={sigma:.4g}. Raise the noise or stop here')
        allowed = taken + new
    steps = remaining if allowed is None else allowed - taken
    planned = (epsilon_prv(mechanism.segments(
        prior + [Segment(sigma, sample_rate, steps)]), delta)
               if sigma > 0 else float('inf'))
    return NoisePlan(sigma, source, allowed, planned, note)
