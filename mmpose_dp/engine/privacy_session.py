"""The state the privacy hooks share within one run.

:class:`~.privacy_hook.PrivacyHook` plans the run and owns a
:class:`PrivacySession`; :class:`~.privacy_checkpoint_hook.
PrivacyCheckpointHook`, :class:`~.budget_stop_hook.BudgetStopHook` and
:class:`~.privacy_logger_hook.PrivacyLoggerHook` read and fill it. Each hook
does one job, as MMEngine's own hooks do.
"""
from typing import Dict, Optional

from mmengine.model import is_model_wrapper

from ..datasets import PoissonBatchSampler
from ..models import NotPrivateError
from ..privacy import EpsilonTracker, PrivacyLedger
from ..privacy.plan import PrivacyPlan


class PrivacySession:
    """One run's privacy state (filled as the run goes).

    Attributes:
        training: whether this run trains (``runner.test()`` of a DP config
            has nothing to account for).
        delta: of the run (set at ``before_run``).
        target_epsilon: the budget, or ``None`` with an explicit sigma.
        ledger: the steps taken, resumed from a checkpoint where one is.
        resumed_plan: the plan of the checkpoint resumed from.
        plan: this run's plan (set at ``before_train``).
        tracker: cheap epsilon queries along the plan.
        allowed_steps: the ledger's step count the budget allows, or
            ``None`` (no budget: an explicit sigma without a target).
        model_preparation: what DPRunner did to the model (BatchNorm,
            trainable set).
    """

    def __init__(self, target_epsilon: Optional[float] = None,
                 delta: Optional[float] = None) -> None:
        self.training = False
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.ledger: Optional[PrivacyLedger] = None
        self.resumed_plan: Optional[PrivacyPlan] = None
        self.plan: Optional[PrivacyPlan] = None
        self.tracker: Optional[EpsilonTracker] = None
        self.allowed_steps: Optional[int] = None
        self.model_preparation: Dict = {}

    @property
    def budget_spent(self) -> bool:
        """The ledger has taken every step the budget allows."""
        return (self.allowed_steps is not None and self.ledger is not None
                and self.ledger.steps >= self.allowed_steps)


#: The hooks a DP run needs, by type name, and the ``privacy`` keys each
#: takes (DPRunner adds them all).
HOOKS_KEYS = {
    'PrivacyHook': ('target_epsilon', 'noise_multiplier', 'delta',
                    'loss_reduction', 'projection', 'public_data',
                    'public_features', 'mechanism', 'secret_dir'),
    'PrivacyCheckpointHook': ('disjoint_from_loaded_checkpoint', ),
    'BudgetStopHook': (),
    'PrivacyLoggerHook': ('interval', ),
    'BufferGuardHook': (),
}
PRIVACY_HOOKS = tuple(HOOKS_KEYS)


def find_session(runner) -> PrivacySession:
    """The session of the runner's :class:`PrivacyHook`."""
    for hook in getattr(runner, 'hooks', ()):
        session = getattr(hook, 'session', None)
        if isinstance(session, PrivacySession):
            return session
    raise NotPrivateError(
        "this hook needs dict(type='PrivacyHook') in custom_hooks; build DP "
        "runs with runner_type='DPRunner' (configs/_base_/dp_sgd.py), which "
        'adds every privacy hook')


def check_privacy_hooks(runner) -> None:
    """Refuse a run that lacks one of :data:`PRIVACY_HOOKS` (without the
    checkpoint hook, for instance, a resume would start a fresh ledger)."""
    present = {type(h).__name__ for h in getattr(runner, 'hooks', ())}
    missing = [h for h in PRIVACY_HOOKS if h not in present]
    if missing:
        raise NotPrivateError(
            f'DP training needs the hooks {list(PRIVACY_HOOKS)}; missing '
            f"{missing}. Build DP runs with runner_type='DPRunner' "
            '(configs/_base_/dp_sgd.py), which adds them')


def dp_optim_wrapper(runner):
    """The runner's :class:`~.optim_wrapper.DPOptimWrapper`."""
    from .optim_wrapper import DPOptimWrapper
    ow = runner.optim_wrapper
    if not isinstance(ow, DPOptimWrapper):
        raise NotPrivateError(
            "DP training needs optim_wrapper=dict(type='DPOptimWrapper', "
            f'...); got {type(ow).__name__}')
    return ow


def poisson_sampler(runner) -> PoissonBatchSampler:
    """The training loader's :class:`PoissonBatchSampler`."""
    sampler = getattr(runner.train_dataloader, 'batch_sampler', None)
    if not isinstance(sampler, PoissonBatchSampler):
        raise NotPrivateError(
            'DP training needs Poisson sampling: set train_dataloader.'
            "batch_sampler=dict(type='PoissonBatchSampler') and "
            "collate_fn=dict(type='dp_pseudo_collate')")
    return sampler


def unwrapped_model(runner):
    model = runner.model
    return model.module if is_model_wrapper(model) else model
