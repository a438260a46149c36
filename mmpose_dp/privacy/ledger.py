"""The privacy ledger: every private step a run has taken, checkpointable."""
import secrets
from typing import Callable, Dict, List, Optional

from .accounting import (RELATIVE_EPS_ERROR, PRVEpsilon, RDPEpsilon,
                         Segment, epsilon_prv, epsilon_rdp)
from .errors import NotPrivateError
from .mechanisms import GaussianMechanism, Mechanism


class PrivacyLedger:
    """Record of (noise_multiplier, sample_rate) per step, as segments.

    The ledger is what epsilon is computed from, so it travels in every
    checkpoint; a resumed run continues it and can never reset it. Its state
    names the accounting event and a version, and the privacy mechanism
    whose steps it counts (:attr:`mechanism`, DP-SGD's by default; its
    ``segments`` turn the steps into what the accountant composes); a state
    of another event, version or mechanism is refused.
    """

    #: The mechanism whose steps the segments count.
    MECHANISM = 'poisson_subsampled_gaussian'
    VERSION = 1

    def __init__(self, delta: float, mechanism: Optional[Mechanism] = None):
        self.delta = float(delta)
        self.mechanism = mechanism or GaussianMechanism()
        self.segments: List[Segment] = []
        #: Identifies the run (and its resumes) whose steps this counts;
        #: a public id, no secret. Its write-ahead journal is named by it.
        self.lineage = secrets.token_hex(6)
        #: Called with :meth:`state_dict` after every step (the write-ahead
        #: journal, :class:`~mmpose_dp.privacy.LedgerJournal`).
        self.on_step: Optional[Callable[[Dict], None]] = None

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.segments)

    def step(self, noise_multiplier: float, sample_rate: float) -> None:
        """Record one private step (including a noise-only step on an empty
        batch). Call it *before* anything of the step is released: with a
        journal attached, the step is on disk when this returns."""
        last = self.segments[-1] if self.segments else None
        if (last is not None and last.noise_multiplier == noise_multiplier
                and last.sample_rate == sample_rate):
            self.segments[-1] = last._replace(steps=last.steps + 1)
        else:
            self.segments.append(
                Segment(float(noise_multiplier), float(sample_rate), 1))
        if self.on_step is not None:
            self.on_step(self.state_dict())

    @classmethod
    def from_state_dict(cls, state: Dict) -> 'PrivacyLedger':
        """The ledger a checkpoint (or journal) holds, with the mechanism
        its state names (DP-SGD's for ledgers written before mechanisms
        were named)."""
        from .mechanisms import build_mechanism
        config = dict(state.get('privacy_mechanism') or {})
        config.pop('version', None)
        ledger = cls(state['delta'], build_mechanism(config or None))
        ledger.load_state_dict(state)
        return ledger

    def accounted(self, more: Optional[Segment] = None) -> List[Segment]:
        """What the accountant composes: the mechanism's segments of the
        steps taken (and ``more``)."""
        steps = self.segments + ([more] if more else [])
        return self.mechanism.segments(steps)

    def epsilon(self, relative_error: float = RELATIVE_EPS_ERROR) -> float:
        """PRV upper bound on the epsilon spent so far."""
        return epsilon_prv(self.accounted(), self.delta, relative_error)

    def epsilon_rdp(self) -> float:
        return epsilon_rdp(self.accounted(), self.delta)

    def state_dict(self) -> Dict:
        return dict(
            mechanism=self.MECHANISM, version=self.VERSION,
            privacy_mechanism=self.mechanism.config(),
            delta=self.delta, lineage=self.lineage,
            segments=[list(s) for s in self.segments],
            steps=self.steps)

    def load_state_dict(self, state: Dict) -> None:
        found = (state.get('mechanism'), state.get('version'))
        if found != (self.MECHANISM, self.VERSION):
            raise NotPrivateError(
                f'the privacy ledger accounts for {found[0]!r} (version '
                f'{found[1]}), this mmpose_dp for {self.MECHANISM!r} (version '
                f'{self.VERSION}); its steps cannot be continued here')
        # Ledgers written before mechanisms were named counted DP-SGD.
        theirs = state.get('privacy_mechanism') or \
            GaussianMechanism().config()
        if theirs != self.mechanism.config():
            setting = {k: v for k, v in theirs.items() if k != 'version'}
            raise NotPrivateError(
                f'the privacy ledger counts steps of the mechanism {theirs}, '
                f'this run uses {self.mechanism.config()}; set '
                f'privacy.mechanism={setting} to continue it')
        self.delta = float(state['delta'])
        self.segments = [
            Segment(float(s), float(q), int(n)) for s, q, n in state['segments']
        ]
        # Ledgers written before lineages existed start one here.
        self.lineage = str(state.get('lineage') or self.lineage)


class EpsilonTracker:
    """Fast epsilon for the log: one PRV accountant for the whole plan.

    Built for ``ledger segments + planned_steps`` more steps at the current
    sigma and q (as the ledger's mechanism accounts for them), with an absolute error scaled to the planned final epsilon,
    so every query up to the plan is one FFT power (well under a second).
    The value is a valid upper bound at every step; it is rebuilt when the
    ledger leaves the plan.
    """

    def __init__(self, ledger: PrivacyLedger, noise_multiplier: float,
                 sample_rate: float, planned_steps: int,
                 final_epsilon: Optional[float] = None):
        self.ledger = ledger
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.plan = ledger.accounted(
            Segment(noise_multiplier, sample_rate, max(planned_steps, 1)))
        if final_epsilon is None:
            final_epsilon = epsilon_prv(self.plan, ledger.delta)
        try:
            self._prv = PRVEpsilon(
                self.plan, ledger.delta,
                max(RELATIVE_EPS_ERROR * final_epsilon, 1e-5))
        except RuntimeError:  # PRV cannot discretise: RDP (cached curve)
            self._prv = None
        self._rdp = None

    def _counts(self, more_steps: int = 0) -> Optional[List[int]]:
        """Steps per planned mechanism after ``more_steps`` further steps at
        the current one; None once the ledger has left the plan."""
        spent: Dict = {}
        for s in self.ledger.accounted(
                Segment(self.noise_multiplier, self.sample_rate, more_steps)):
            key = (s.noise_multiplier, s.sample_rate)
            spent[key] = spent.get(key, 0) + s.steps
        planned = {(s.noise_multiplier, s.sample_rate): s.steps
                   for s in self.plan}
        if any(n and n > planned.get(k, 0) for k, n in spent.items()):
            return None
        return [spent.get((s.noise_multiplier, s.sample_rate), 0)
                for s in self._prv.segments]

    def epsilon(self) -> float:
        """PRV upper bound of the steps taken so far."""
        return self.epsilon_after(0)

    def epsilon_after(self, more_steps: int) -> float:
        """Epsilon after ``more_steps`` further steps at the current
        mechanism (one FFT power within the plan)."""
        counts = self._counts(more_steps) if self._prv else None
        if counts is not None:
            return self._prv.upper(counts)
        if self._prv is None:
            # PRV cannot discretise this mechanism, so epsilon_prv would
            # try and fall back to RDP at every step (seconds each): the
            # same RDP bound from the one-step curve, while every step
            # taken is this mechanism's.
            segments = self.ledger.accounted(Segment(
                self.noise_multiplier, self.sample_rate, more_steps))
            mine = (self.noise_multiplier, self.sample_rate)
            if all((s.noise_multiplier, s.sample_rate) == mine
                   for s in segments if s.steps):
                if self._rdp is None:
                    self._rdp = RDPEpsilon(*mine)
                return self._rdp.epsilon(sum(s.steps for s in segments),
                                         self.ledger.delta)
        return epsilon_prv(self.ledger.accounted(
            Segment(self.noise_multiplier, self.sample_rate, more_steps)),
            self.ledger.delta)
