"""PrivacyHook: prepare the model, calibrate, log, checkpoint, stop (HOOKS)."""
import math
import os.path as osp
import time
from typing import Dict, Optional

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from ..datasets import PoissonBatchSampler
from ..models import (NotPrivateError, check_no_cross_sample_modules,
                      detect_loss_reduction)
from ..privacy import (EpsilonTracker, PrivacyLedger, plan_noise,
                       privacy_statement, statement_line)
from ..privacy.ledger_journal import LedgerJournal, journal_path
from ..privacy.plan import PrivacyPlan
from .checkpoint_loading import load_checkpoint_file
from .checkpoint_privacy import (add_privacy_state, checkpoint_folder,
                                 privacy_state, resume_ledger,
                                 scrub_private_scalars)
from .loops import DPEpochBasedTrainLoop
from .model_preparation import pretrained_checkpoints
from .optim_wrapper import DPOptimWrapper
from .public_stages import build_stages, public_feature_words

@HOOKS.register_module()
class PrivacyHook(Hook):
    """Owns the privacy budget of a run.

    * ``before_run``: checks the model (no module with running statistics
      in train mode, a loss with a known batch reduction), turns in-place
      activations off and attaches per-sample gradients to the
      :class:`DPOptimWrapper`.
    * ``before_train``: from the Poisson sampler's q and the loop's steps T,
      calibrates sigma for ``target_epsilon`` (PRV) or takes the configured
      ``noise_multiplier``, and bounds the number of steps by the budget on
      every path (fresh, resumed, changed plan, explicit sigma).
    * every ``interval`` iterations: logs ``epsilon``, ``noise_multiplier``,
      ``sample_rate``, ``privacy_steps`` and ``delta`` (text/JSON log and
      visualiser backends); ``after_train`` logs the final PRV and RDP
      epsilon and what they protect.
    * checkpoints carry the ledger and the plan (unit, what is protected and
      public, the public set's fingerprint) and no un-noised statistic of
      private batches; ``--resume`` continues the ledger and refuses another
      unit or public set; ``load_from`` a DP checkpoint is refused unless
      the new private data are declared disjoint from the old.
    * training stops before a step would exceed ``target_epsilon``.

    Args:
        target_epsilon: the budget; sigma is calibrated to it unless
            ``noise_multiplier`` is given, in which case it only bounds the
            number of steps.
        noise_multiplier: an explicit sigma.
        delta: defaults to ``1 / (10 N_private)``; ``delta >= 1/N_private``
            is refused.
        interval: log interval in iterations (default: the LoggerHook's).
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
        disjoint_from_loaded_checkpoint: declare that this run's private
            data are disjoint from those of a DP checkpoint given as
            ``load_from`` (whose ledger is then not continued).
    """

    priority = 'ABOVE_NORMAL'  # log before LoggerHook reads the scalars

    def __init__(self,
                 target_epsilon: Optional[float] = None,
                 noise_multiplier: Optional[float] = None,
                 delta: Optional[float] = None,
                 interval: Optional[int] = None,
                 loss_reduction: Optional[str] = None,
                 projection: Optional[Dict] = None,
                 public_data: Optional[Dict] = None,
                 public_features: Optional[Dict] = None,
                 disjoint_from_loaded_checkpoint: bool = False) -> None:
        if target_epsilon is None and noise_multiplier is None:
            raise ValueError(
                'set privacy.target_epsilon (sigma is calibrated) or '
                'privacy.noise_multiplier')
        if target_epsilon is not None and target_epsilon <= 0:
            raise ValueError('privacy.target_epsilon must be > 0')
        self.target_epsilon = target_epsilon
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.interval = interval
        self.loss_reduction = loss_reduction
        if projection is not None and not public_data:
            raise ValueError(
                'privacy.projection needs public data: set privacy.public_data'
                '=dict(num_samples=100, seed=0) or dict(dataset=dict(...))')
        if public_data and not (bool(public_data.get('num_samples'))
                                ^ ('dataset' in public_data)):
            raise ValueError('privacy.public_data takes num_samples (and '
                             'seed) or dataset, not both')
        if public_features is not None:
            public_features = dict(public_features)
            if public_features.pop('labels_are_public', None) is not True:
                raise NotPrivateError(
                    'privacy.public_features (feature DP) computes an '
                    'un-noised loss on every training record: its blurred '
                    'crop AND its keypoint labels, visibility and box. The '
                    'epsilon then protects only the image detail that the '
                    'blur removes, not the pose. If that is your threat '
                    'model, say so with privacy.public_features.'
                    'labels_are_public=True; otherwise use DP-SGD or PDP')
        self.projection = projection
        self.public_data = public_data
        self.public_features = public_features
        self.disjoint_from_loaded_checkpoint = disjoint_from_loaded_checkpoint
        self.ledger: Optional[PrivacyLedger] = None
        self.tracker: Optional[EpsilonTracker] = None
        self.allowed_steps: Optional[int] = None
        self.training = False
        self._resumed_plan: Optional[PrivacyPlan] = None
        self._plan: Optional[PrivacyPlan] = None
        self._model_preparation: Dict = {}
        self._engine_logged = False

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _optim_wrapper(runner) -> DPOptimWrapper:
        ow = runner.optim_wrapper
        if not isinstance(ow, DPOptimWrapper):
            raise NotPrivateError(
                "PrivacyHook needs optim_wrapper=dict(type='DPOptimWrapper', "
                f'...); got {type(ow).__name__}')
        return ow

    @staticmethod
    def _sampler(runner) -> PoissonBatchSampler:
        sampler = getattr(runner.train_dataloader, 'batch_sampler', None)
        if not isinstance(sampler, PoissonBatchSampler):
            raise NotPrivateError(
                'DP training needs Poisson sampling: set train_dataloader.'
                "batch_sampler=dict(type='PoissonBatchSampler') and "
                "collate_fn=dict(type='dp_pseudo_collate')")
        return sampler

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    # -- run ---------------------------------------------------------------
    def before_run(self, runner) -> None:
        self.training = isinstance(getattr(runner, '_train_loop', None),
                                   BaseLoop)
        if not self.training:  # runner.test()/val() of a DP config
            return
        if not isinstance(runner.train_loop, DPEpochBasedTrainLoop):
            raise NotPrivateError(
                "DP training needs train_cfg=dict(type='DPEpochBasedTrainLoop'"
                ', ...) (one iteration = one logical DP step)')
        self._check_pretrained_weights(runner)
        model = self._model(runner)
        model.train()
        check_no_cross_sample_modules(model)
        reduction = detect_loss_reduction(model, self.loss_reduction)
        ow = self._optim_wrapper(runner)
        ow.attach(model, reduction)
        runner.logger.info(f'[privacy] clipping engine {ow.engine_name!r}')
        self._log_functorch(runner, ow.engine)
        sampler = self._sampler(runner)
        n_private = sampler.num_private
        if self.delta is None:
            self.delta = 1.0 / (10 * n_private)
        elif self.delta >= 1.0 / n_private:
            raise NotPrivateError(
                f'privacy.delta={self.delta} >= 1/N_private = '
                f'1/{n_private}: a mechanism that publishes one '
                f'{sampler.unit} outright would satisfy it. Use delta < 1/N '
                f'(default 1/(10 N) = {1 / (10 * n_private):.3g})')
        self.ledger = PrivacyLedger(self.delta)
        n_frozen = sum(p.numel() for p in model.parameters()
                       if not p.requires_grad)
        n_train = sum(p.numel() for p in ow.params)
        runner.logger.info(
            f'[privacy] loss reduction {reduction!r}; {n_train} trainable '
            f'parameters clipped and noised, {n_frozen} frozen; privacy '
            f'unit {sampler.unit!r}: N_private={n_private} {sampler.unit}s '
            f'({len(sampler.private_indices)} records), '
            f'delta={self.delta:.3g}')
        if runner.train_loop.log_private_metrics:
            runner.logger.warning(
                '[privacy] privacy.log_private_metrics=True: this log shows '
                'the loss and accuracy of private batches WITHOUT noise, '
                'outside the guarantee; treat the log as private data. '
                'Checkpoints never contain them')

    def _check_pretrained_weights(self, runner) -> None:
        """An ``init_cfg`` of type ``Pretrained`` loads weights without
        ``after_load_checkpoint``: a local DP checkpoint there is refused
        as ``load_from`` one is."""
        for path in pretrained_checkpoints(runner.cfg.get('model')):
            if not osp.isfile(path):
                continue
            state, _ = privacy_state(load_checkpoint_file(path, 'cpu'))
            if state is not None:
                self._refuse_dp_weights(runner, path, state)

    def _refuse_dp_weights(self, runner, path: str, state: Dict) -> None:
        if not self.disjoint_from_loaded_checkpoint:
            raise NotPrivateError(
                f'{path} was trained with DP ({state["steps"]} steps on '
                'its private data; its privacy record survives publishing '
                "in meta['privacy']). A new ledger is valid only if this "
                "run's private data are disjoint from that run's; on the "
                'same data the two epsilons add up. Use --resume to '
                'continue its ledger, or declare privacy.'
                'disjoint_from_loaded_checkpoint=True')
        runner.logger.warning(
            f'[privacy] {path} was trained with DP ({state["steps"]} steps);'
            ' this run starts a new ledger because privacy.'
            'disjoint_from_loaded_checkpoint=True declares its private data '
            "disjoint from that run's")

    def after_load_checkpoint(self, runner, checkpoint: Dict) -> None:
        if not self.training:
            return
        state, plan = privacy_state(checkpoint)
        if getattr(runner, '_resume', False):
            if state is None:
                raise NotPrivateError(
                    'resuming from a checkpoint without a privacy ledger: '
                    'the steps it took were not accounted for. Resume only '
                    'from checkpoints written by a DP run')
            self._resume_ledger(runner, state)
            self._resumed_plan = PrivacyPlan.from_dict(plan or {})
        else:
            self._keep_fitting_weights(runner, checkpoint)
        if state is not None and not getattr(runner, '_resume', False):
            self._refuse_dp_weights(runner, f'load_from {runner._load_from}',
                                    state)

    def _resume_ledger(self, runner, state: Dict) -> None:
        """The checkpoint's ledger, or its write-ahead journal where that
        counts more steps (taken after the checkpoint, before a crash)."""
        folders = [runner.work_dir,
                   checkpoint_folder(getattr(runner, '_load_from', None))]
        extra, path = resume_ledger(self.ledger, state, folders)
        # Segments do not depend on delta; report at this run's delta.
        self.ledger.delta = self.delta
        if path is None:
            runner.logger.warning(
                f'[privacy] resumed ledger: {self.ledger.steps} steps taken '
                'as the checkpoint counts them; no write-ahead journal '
                f'{osp.basename(journal_path("", self.ledger.lineage))} '
                f'found in {[f for f in folders if f]}, so steps the earlier '
                'run took after this checkpoint (if any) are NOT counted. '
                'Put its journal in the work dir to count them')
        elif extra:
            runner.logger.warning(
                f'[privacy] resumed ledger: the write-ahead journal {path} '
                f'counts {self.ledger.steps} steps, the checkpoint '
                f'{self.ledger.steps - extra}: {extra} steps were taken '
                'after the checkpoint (their results may have been '
                f'released), so all {self.ledger.steps} are counted')
        else:
            runner.logger.info(
                f'[privacy] resumed ledger: {self.ledger.steps} steps taken '
                f'(checkpoint and write-ahead journal {path} agree)')

    @staticmethod
    def _keep_fitting_weights(runner, checkpoint: Dict) -> None:
        """Drop the ``load_from`` weights whose shapes differ from the
        model's (e.g. a COCO head with 17 keypoints in an MPII model with
        16): those layers keep their fresh initialisation, and the log says
        which."""
        weights = checkpoint.get('state_dict', checkpoint)
        model = PrivacyHook._model(runner).state_dict()
        mismatched = [
            f'{k} {tuple(v.shape)} -> {tuple(model[k].shape)}'
            for k, v in weights.items()
            if k in model and hasattr(v, 'shape') and v.shape != model[k].shape]
        for entry in mismatched:
            del weights[entry.split(' ')[0]]
        if mismatched:
            runner.logger.warning(
                f'[privacy] load_from: {len(mismatched)} tensors do not fit '
                'this model and keep their fresh initialisation (checkpoint '
                f'shape -> model shape): {"; ".join(mismatched)}')

    def before_save_checkpoint(self, runner, checkpoint: Dict) -> None:
        if self.ledger is None:  # not a training run
            return
        add_privacy_state(checkpoint, self.ledger.state_dict(),
                          self._plan and self._plan.to_dict())
        scrub_private_scalars(checkpoint)

    def before_train(self, runner) -> None:
        ow = self._optim_wrapper(runner)
        sampler = self._sampler(runner)
        q = sampler.sample_rate
        remaining = runner.max_iters - runner.iter
        if remaining <= 0:
            raise NotPrivateError('no training steps left to take')
        t0 = time.time()
        prior = list(self.ledger.segments)
        self._model_preparation = getattr(runner, 'private_model', {})
        public_set, stages = build_stages(
            self._model(runner), runner.cfg.train_dataloader,
            runner.train_dataloader.dataset, sampler, self.public_data,
            self.projection, self.public_features)
        if public_set:
            runner.logger.info(
                f"[privacy] public set {public_set['id']}: "
                f"{public_set['images']} whole images, "
                f"{public_set['records']} records")
        resumed = self._resumed_plan
        if resumed is not None:
            self._check_resumed_plan(resumed, sampler.unit, public_set)
        noise = plan_noise(self.target_epsilon, self.noise_multiplier,
                           self.delta, q, remaining, prior, resumed)
        self.allowed_steps = noise.allowed_steps
        ow.configure(noise.noise_multiplier, q, sampler.expected_batch_size,
                     self.ledger, self.allowed_steps, stages)
        self._start_journal(runner)
        planned = (remaining if noise.allowed_steps is None else
                   noise.allowed_steps - self.ledger.steps)
        if noise.noise_multiplier > 0:
            self.tracker = EpsilonTracker(self.ledger, noise.noise_multiplier,
                                          q, planned, noise.planned_epsilon)
        labels_public = (self.public_features is not None
                         or bool(resumed and resumed.labels_public))
        statement = privacy_statement(
            sampler.unit, public_feature_words(self.public_features),
            public_set, labels_public)
        self._plan = PrivacyPlan(
            unit=sampler.unit,
            batch_norm=self._model_preparation.get('batch_norm'),
            trainable=self._model_preparation.get('trainable'),
            n_private=sampler.num_private,
            private_data=sampler.private_data_id,
            engine=getattr(getattr(ow.engine, 'chosen', None), 'name',
                           None if ow.engine_name == 'auto' else
                           ow.engine_name),
            target_epsilon=self.target_epsilon,
            delta=self.delta, sample_rate=q,
            total_steps=self.ledger.steps + remaining,
            noise_multiplier=noise.noise_multiplier,
            sigma_source=noise.source, max_grad_norm=ow.max_grad_norm,
            method=' + '.join(['DP-SGD'] + [type(s).__name__
                                            for s in stages]),
            labels_public=labels_public, public_set=public_set, **statement)
        runner.logger.info(
            f'[privacy] noise_multiplier={noise.noise_multiplier:.4f} '
            f'({noise.note}), sample_rate={q:.5g} (expected batch '
            f'{sampler.expected_batch_size} of N_private='
            f'{sampler.num_private} {sampler.unit}s), steps planned='
            f'{remaining} (already taken {self.ledger.steps}'
            + ('' if planned == remaining else
               f'; the budget allows {planned} of them') +
            f'), max_grad_norm={ow.max_grad_norm}, delta={self.delta:.3g}; '
            f'epsilon after the plan <= {noise.planned_epsilon:.4f} (PRV); '
            f'{time.time() - t0:.1f}s')
        runner.logger.info(f'[privacy] method: {self._plan.method}; '
                           f'{statement_line(statement)}')

    def _start_journal(self, runner) -> None:
        """Write the ledger ahead: after every step, before its update is
        applied (process 0; one journal per ledger lineage)."""
        if get_dist_info()[0] != 0:
            return
        journal = LedgerJournal(journal_path(runner.work_dir,
                                             self.ledger.lineage))
        journal(self.ledger.state_dict())
        self.ledger.on_step = journal
        runner.logger.info(f'[privacy] write-ahead ledger: {journal.path}')

    def _check_resumed_plan(self, resumed: PrivacyPlan, unit: str,
                            public_set: Optional[Dict]) -> None:
        """A resumed run keeps the meaning of its ledger: the same privacy
        unit and the same public set."""
        if resumed.unit != unit:
            raise NotPrivateError(
                f"the checkpoint's ledger counts privacy unit "
                f'{resumed.unit!r}, this run {unit!r}; resume with '
                f'privacy.unit={resumed.unit!r}')
        trained = resumed.batch_norm_mode
        if trained != (self._model_preparation.get('batch_norm') or {}).get(
                'mode'):
            raise NotPrivateError(
                f'the resumed run converted BatchNorm with mode {trained!r}, '
                f'this run with '
                f"{self._model_preparation['batch_norm']['mode']!r}; set "
                f'privacy.batch_norm.mode={trained!r}')
        before = resumed.public_set_id
        now = (public_set or {}).get('id')
        if before != now:
            raise NotPrivateError(
                f'the resumed run used public set {before}, this run '
                f'{now}: records private so far would become public (or '
                'the reverse). Resume with the same privacy.public_data')

    # -- per iteration -----------------------------------------------------
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._log_engine_choice(runner)
        interval = self.interval or self._logger_interval(runner)
        last = (runner.iter + 1 == runner.max_iters)
        stop = (self.allowed_steps is not None
                and self.ledger.steps >= self.allowed_steps)
        # Same iterations as LoggerHook, so the text/JSON log shows them.
        if (self.every_n_inner_iters(batch_idx, interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)
                or last or stop):
            self._log(runner)
        if stop and not last:
            runner.train_loop.stop_training = True
            name = f'budget_stop_iter_{runner.iter + 1}.pth'
            runner.logger.warning(
                f'[privacy] stopping: the next step would exceed '
                f'epsilon={self.target_epsilon}; saving {name}')
            # Mid-epoch, CheckpointHook would not save: keep the result.
            runner.save_checkpoint(runner.work_dir, name)

    def _log_engine_choice(self, runner) -> None:
        engine = getattr(getattr(runner, 'optim_wrapper', None), 'engine',
                         None)
        report = getattr(engine, 'report', None)
        if report and not self._engine_logged:
            self._engine_logged = True
            runner.logger.info('[privacy] clipping engine auto: ' +
                               '; '.join(report))
            self._log_functorch(runner, engine.chosen)
        chosen = getattr(engine, 'chosen', None)
        if chosen is not None and self._plan is not None:
            self._plan = self._plan.replace(engine=chosen.name)

    @staticmethod
    def _log_functorch(runner, engine) -> None:
        modules = getattr(engine, 'functorch_modules', None)
        if modules:
            runner.logger.info(
                f'[privacy] hooks: per-sample gradients of {len(modules)} '
                "module(s) come from Opacus' functorch fallback (one "
                f'vmapped call of their forward, exact): {modules[:6]}')

    def after_train(self, runner) -> None:
        if self.ledger.steps == 0:
            return
        ow = self._optim_wrapper(runner)
        eps = self.ledger.epsilon() if ow.noise_multiplier > 0 else math.inf
        eps_rdp = self.ledger.epsilon_rdp()
        runner.message_hub.update_info('privacy_final', dict(
            epsilon=eps, epsilon_rdp=eps_rdp, delta=self.delta,
            steps=self.ledger.steps))
        runner.logger.info(
            f'[privacy] final: ({eps:.4f}, {self.delta:.3g})-DP by the PRV '
            f'accountant (upper bound; RDP gives {eps_rdp:.4f}) after '
            f'{self.ledger.steps} steps at noise_multiplier='
            f'{ow.noise_multiplier:.4f}, sample_rate='
            f'{ow.sample_rate:.5g}, max_grad_norm={ow.max_grad_norm}; '
            f'{statement_line(self._plan.statement)}')

    def _log(self, runner) -> None:
        ow = self._optim_wrapper(runner)
        eps = self.tracker.epsilon() if self.tracker else math.inf
        hub = runner.message_hub
        for key, value in dict(
                epsilon=eps,
                noise_multiplier=ow.noise_multiplier,
                sample_rate=ow.sample_rate,
                privacy_steps=self.ledger.steps,
                delta=self.delta).items():
            hub.update_scalar(f'train/{key}', float(value))

    @staticmethod
    def _logger_interval(runner) -> int:
        for hook in runner.hooks:
            if type(hook).__name__ == 'LoggerHook':
                return hook.interval
        return 50

