"""PrivacyHook: check and prepare the model, plan the privacy budget."""
import time
from typing import Dict, Optional

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from ..models import (NotPrivateError, check_no_cross_sample_modules,
                      detect_loss_reduction)
from ..privacy import (EpsilonTracker, PrivacyLedger, plan_noise,
                       privacy_statement, statement_line)
from ..privacy.ledger_journal import LedgerJournal, journal_path
from ..privacy.mechanisms import build_mechanism
from ..privacy.plan import PrivacyPlan
from .loops import DPEpochBasedTrainLoop
from .privacy_logger_hook import log_functorch
from .privacy_session import (PrivacySession, check_privacy_hooks,
                              dp_optim_wrapper, poisson_sampler,
                              unwrapped_model)
from .secret_keys import keep_secret_keys
from .public_stages import (build_stages, check_public_options,
                            public_feature_words)


@HOOKS.register_module()
class PrivacyHook(Hook):
    """Sets a DP run up and plans its budget; owns the run's
    :class:`~.privacy_session.PrivacySession`, which the other privacy
    hooks read (:class:`~.privacy_checkpoint_hook.PrivacyCheckpointHook`:
    ledger and plan in and out of checkpoints, resume and load refusals;
    :class:`~.budget_stop_hook.BudgetStopHook`; :class:`~.privacy_logger_hook.
    PrivacyLoggerHook`: epsilon and the rest in every log). DPRunner adds
    them all; a run missing one is refused.

    * ``before_run``: checks the model (no module with running statistics
      in train mode, a loss with a known batch reduction), turns in-place
      activations off, attaches per-sample gradients to the
      :class:`DPOptimWrapper`, fixes delta and opens the ledger.
    * ``before_train``: builds the public stages (PDP projection, FDP
      public features), checks that a resumed run keeps its ledger's unit,
      BatchNorm mode and public set, and from the Poisson sampler's q and
      the loop's steps T calibrates sigma for ``target_epsilon`` (PRV) or
      takes the configured ``noise_multiplier``, bounding the number of
      steps by the budget on every path (fresh, resumed, changed plan,
      explicit sigma); starts the write-ahead ledger journal.

    Args:
        target_epsilon: the budget; sigma is calibrated to it unless
            ``noise_multiplier`` is given, in which case it only bounds the
            number of steps.
        noise_multiplier: an explicit sigma.
        delta: defaults to ``1 / (10 N_private)``; ``delta >= 1/N_private``
            is refused.
        loss_reduction: declare ``'mean'``/``'sum'`` for a loss that
            :mod:`mmpose_dp.models.loss_reduction` does not know.
        projection: PDP-SGD, ``dict(rank=100, interval=50,
            dtype='float32')``; needs ``public_data``.
        public_data: ``dict(num_samples=100, seed=0)``: whole images carved
            out of the training annotations, or ``dict(dataset=dict(...))``:
            a separate data set that shares no image with the private one.
        public_features: feature DP, ``dict(transform=dict(
            type='PublicFeatureBlur', kernel_size=25, sigma=10), weight=1.0,
            batch_size=None, seed=None, labels_are_public=True)``. The
            public-feature loss uses every record's keypoints, visibility
            and box, so it refuses to start unless ``labels_are_public=True``
            says that they are public.
        mechanism: ``'gaussian'`` (DP-SGD, default) or
            ``dict(type='banded_mf', bands=b)``
            (:mod:`mmpose_dp.privacy.mechanisms`): batch rule, noise,
            accounting and sigma planning of every step.
        secret_dir: where a mechanism with memory (BandMF, b > 1) keeps
            the keys a resume needs (:mod:`mmpose_dp.privacy.secret_store`).
    """

    priority = 'HIGH'  # the session is ready before the other hooks run

    def __init__(self,
                 target_epsilon: Optional[float] = None,
                 noise_multiplier: Optional[float] = None,
                 delta: Optional[float] = None,
                 loss_reduction: Optional[str] = None,
                 projection: Optional[Dict] = None,
                 public_data: Optional[Dict] = None,
                 public_features: Optional[Dict] = None,
                 mechanism=None,
                 secret_dir: Optional[str] = None) -> None:
        if target_epsilon is None and noise_multiplier is None:
            raise ValueError(
                'set privacy.target_epsilon (sigma is calibrated) or '
                'privacy.noise_multiplier')
        if target_epsilon is not None and target_epsilon <= 0:
            raise ValueError('privacy.target_epsilon must be > 0')
        self.noise_multiplier = noise_multiplier
        self.loss_reduction = loss_reduction
        self.public_features = check_public_options(projection, public_data,
                                                    public_features)
        self.projection = projection
        self.public_data = public_data
        self.mechanism = build_mechanism(mechanism)
        self.secret_dir = secret_dir
        self.session = PrivacySession(target_epsilon, delta)

    # -- run ---------------------------------------------------------------
    def before_run(self, runner) -> None:
        session = self.session
        session.training = isinstance(getattr(runner, '_train_loop', None),
                                      BaseLoop)
        if not session.training:  # runner.test()/val() of a DP config
            return
        check_privacy_hooks(runner)
        if not isinstance(runner.train_loop, DPEpochBasedTrainLoop):
            raise NotPrivateError(
                "DP training needs train_cfg=dict(type='DPEpochBasedTrainLoop'"
                ', ...) (one iteration = one logical DP step)')
        model = unwrapped_model(runner)
        model.train()
        check_no_cross_sample_modules(model)
        reduction = detect_loss_reduction(model, self.loss_reduction)
        ow = dp_optim_wrapper(runner)
        ow.attach(model, reduction)
        runner.logger.info(f'[privacy] clipping engine {ow.engine_name!r}')
        log_functorch(runner, ow.engine)
        sampler = poisson_sampler(runner)
        n_private = sampler.num_private
        if session.delta is None:
            session.delta = 1.0 / (10 * n_private)
        elif session.delta >= 1.0 / n_private:
            raise NotPrivateError(
                f'privacy.delta={session.delta} >= 1/N_private = '
                f'1/{n_private}: a mechanism that publishes one '
                f'{sampler.unit} outright would satisfy it. Use delta < 1/N '
                f'(default 1/(10 N) = {1 / (10 * n_private):.3g})')
        session.ledger = PrivacyLedger(session.delta, self.mechanism)
        sampler.mechanism = self.mechanism
        n_frozen = sum(p.numel() for p in model.parameters()
                       if not p.requires_grad)
        n_train = sum(p.numel() for p in ow.params)
        runner.logger.info(
            f'[privacy] loss reduction {reduction!r}; {n_train} trainable '
            f'parameters clipped and noised, {n_frozen} frozen; privacy '
            f'unit {sampler.unit!r}: N_private={n_private} {sampler.unit}s '
            f'({len(sampler.private_indices)} records), '
            f'delta={session.delta:.3g}')
        if runner.train_loop.log_private_metrics:
            runner.logger.warning(
                '[privacy] privacy.log_private_metrics=True: this log shows '
                'the loss and accuracy of private batches WITHOUT noise, '
                'outside the guarantee; treat the log as private data. '
                'Checkpoints never contain them')

    def before_train(self, runner) -> None:
        ow = dp_optim_wrapper(runner)
        sampler = poisson_sampler(runner)
        q = sampler.sample_rate
        remaining = runner.max_iters - runner.iter
        if remaining <= 0:
            raise NotPrivateError('no training steps left to take')
        t0 = time.time()
        session = self.session
        prior = list(session.ledger.segments)
        session.model_preparation = getattr(runner, 'private_model', {})
        public_set, stages = build_stages(
            unwrapped_model(runner), runner.cfg.train_dataloader,
            runner.train_dataloader.dataset, sampler, self.public_data,
            self.projection, self.public_features)
        if public_set:
            runner.logger.info(
                f"[privacy] public set {public_set['id']}: "
                f"{public_set['images']} whole images, "
                f"{public_set['records']} records")
        resumed = session.resumed_plan
        if resumed is not None:
            resumed.check_continued_by(
                sampler.unit,
                (session.model_preparation.get('batch_norm') or {}).get(
                    'mode'), (public_set or {}).get('id'))
        keep_secret_keys(runner, session, ow, sampler, self.secret_dir)
        noise = plan_noise(session.target_epsilon, self.noise_multiplier,
                           session.delta, q, remaining, prior, resumed,
                           self.mechanism)
        session.allowed_steps = noise.allowed_steps
        ow.configure(noise.noise_multiplier, q, sampler.expected_batch_size,
                     session.ledger, session.allowed_steps, stages)
        self._start_journal(runner)
        planned = (remaining if noise.allowed_steps is None else
                   noise.allowed_steps - session.ledger.steps)
        if noise.noise_multiplier > 0:
            session.tracker = EpsilonTracker(
                session.ledger, noise.noise_multiplier, q, planned,
                noise.planned_epsilon)
        labels_public = (self.public_features is not None
                         or bool(resumed and resumed.labels_public))
        statement = privacy_statement(
            sampler.unit, public_feature_words(self.public_features),
            public_set, labels_public)
        session.plan = PrivacyPlan(
            unit=sampler.unit,
            batch_norm=session.model_preparation.get('batch_norm'),
            trainable=session.model_preparation.get('trainable'),
            n_private=sampler.num_private,
            private_data=sampler.private_data_id,
            engine=getattr(getattr(ow.engine, 'chosen', None), 'name',
                           None if ow.engine_name == 'auto' else
                           ow.engine_name),
            target_epsilon=session.target_epsilon,
            delta=session.delta, sample_rate=q,
            total_steps=session.ledger.steps + remaining,
            noise_multiplier=noise.noise_multiplier,
            sigma_source=noise.source, max_grad_norm=ow.max_grad_norm,
            method=' + '.join([self._method_name()] + [type(s).__name__
                                                       for s in stages]),
            mechanism=self.mechanism.config(),
            labels_public=labels_public, public_set=public_set, **statement)
        runner.logger.info(
            f'[privacy] noise_multiplier={noise.noise_multiplier:.4f} '
            f'({noise.note}), sample_rate={q:.5g} (expected batch '
            f'{sampler.expected_batch_size} of N_private='
            f'{sampler.num_private} {sampler.unit}s), steps planned='
            f'{remaining} (already taken {session.ledger.steps}'
            + ('' if planned == remaining else
               f'; the budget allows {planned} of them') +
            f'), max_grad_norm={ow.max_grad_norm}, '
            f'delta={session.delta:.3g}; '
            f'epsilon after the plan <= {noise.planned_epsilon:.4f} (PRV); '
            f'{time.time() - t0:.1f}s')
        runner.logger.info(f'[privacy] method: {session.plan.method}; '
                           f'{statement_line(statement)}')

    def _method_name(self) -> str:
        if self.mechanism.name == 'gaussian':
            return 'DP-SGD'
        return repr(self.mechanism)

    def _start_journal(self, runner) -> None:
        """Write the ledger ahead: after every step, before its update is
        applied (process 0; one journal per ledger lineage)."""
        if get_dist_info()[0] != 0:
            return
        ledger = self.session.ledger
        journal = LedgerJournal(journal_path(runner.work_dir, ledger.lineage))
        journal(ledger.state_dict())
        ledger.on_step = journal
        runner.logger.info(f'[privacy] write-ahead ledger: {journal.path}')
