"""PrivacyHook: prepare the model, calibrate, log, checkpoint, stop (HOOKS)."""
import copy
import math
import time
from typing import Dict, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DATASETS, HOOKS
from mmengine.runner import BaseLoop
from torch.utils.data import Subset

from ..datasets import PoissonBatchSampler, check_disjoint
from ..models import (NotPrivateError, changed_buffers,
                      check_no_cross_sample_modules, detect_loss_reduction,
                      snapshot_buffers)
from ..privacy import (EpsilonTracker, PrivacyLedger,
                       calibrate_noise_multiplier, disable_inplace_activations,
                       epsilon_prv)
from .loops import DPEpochBasedTrainLoop
from .optim_wrapper import DPOptimWrapper
from .stages import ProjectionStage, PublicFeatureStage

LEDGER_KEY = 'privacy_ledger'
PLAN_KEY = 'privacy_plan'


@HOOKS.register_module()
class PrivacyHook(Hook):
    """Owns the privacy budget of a run.

    * ``before_run``: checks the model (no BatchNorm in train mode, a loss
      with a known batch reduction), turns in-place activations off and
      attaches per-sample gradients to the :class:`DPOptimWrapper`.
    * ``before_train``: from the Poisson sampler's q and the loop's steps T,
      calibrates sigma for ``target_epsilon`` (PRV) or takes the configured
      ``noise_multiplier``, and fixes how many steps the budget allows.
    * every ``interval`` iterations: logs ``epsilon``, ``noise_multiplier``,
      ``sample_rate``, ``privacy_steps`` and ``delta`` (text/JSON log and
      visualiser backends); ``after_train`` logs the final PRV and RDP
      epsilon.
    * checkpoints carry the ledger; ``--resume`` continues it (a checkpoint
      without one is refused), so a resumed run never resets epsilon.
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
        public_data: ``dict(num_samples=100, seed=0)`` carved out of the
            training annotations, or ``dict(dataset=dict(...))`` a separate
            data set (refused if it overlaps the private one).
        public_features: feature DP, ``dict(transform=dict(
            type='PublicFeatureBlur', kernel_size=25, sigma=10), weight=1.0,
            batch_size=None, seed=None)``.
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
                 public_features: Optional[Dict] = None) -> None:
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
        self.projection = projection
        self.public_data = public_data
        self.public_features = public_features
        self.ledger: Optional[PrivacyLedger] = None
        self.tracker: Optional[EpsilonTracker] = None
        self.allowed_steps: Optional[int] = None
        self._buffers = None
        self.training = False
        self._resumed_plan: Optional[Dict] = None
        self._plan: Optional[Dict] = None

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
        model = self._model(runner)
        model.train()
        check_no_cross_sample_modules(model)
        reduction = detect_loss_reduction(model, self.loss_reduction)
        changed = disable_inplace_activations(model)
        if changed:
            runner.logger.info(
                f'[privacy] in-place activations turned off in {len(changed)}'
                ' modules (needed by per-sample gradient hooks)')
        ow = self._optim_wrapper(runner)
        ow.attach(model, reduction)
        sampler = self._sampler(runner)
        n_private = sampler.num_private
        if self.delta is None:
            self.delta = 1.0 / (10 * n_private)
        elif self.delta >= 1.0 / n_private:
            raise NotPrivateError(
                f'privacy.delta={self.delta} >= 1/N_private = '
                f'1/{n_private}: a mechanism that publishes one record '
                'outright would satisfy it. Use delta < 1/N (default '
                f'1/(10 N) = {1 / (10 * n_private):.3g})')
        self.ledger = PrivacyLedger(self.delta)
        n_frozen = sum(p.numel() for p in model.parameters()
                       if not p.requires_grad)
        n_train = sum(p.numel() for p in ow.params)
        runner.logger.info(
            f'[privacy] loss reduction {reduction!r}; {n_train} trainable '
            f'parameters clipped and noised, {n_frozen} frozen; '
            f'N_private={n_private}, delta={self.delta:.3g}')

    def after_load_checkpoint(self, runner, checkpoint: Dict) -> None:
        if not self.training:
            return
        state = checkpoint.get(LEDGER_KEY)
        if getattr(runner, '_resume', False):
            if state is None:
                raise NotPrivateError(
                    'resuming from a checkpoint without a privacy ledger: '
                    'the steps it took were not accounted for. Resume only '
                    'from checkpoints written by a DP run')
            self.ledger.load_state_dict(state)
            # Segments do not depend on delta; report at this run's delta.
            self.ledger.delta = self.delta
            self._resumed_plan = checkpoint.get(PLAN_KEY)
            runner.logger.info(
                f'[privacy] resumed ledger: {self.ledger.steps} steps taken')
        elif state is not None:
            runner.logger.warning(
                '[privacy] load_from checkpoint was trained with DP '
                f'({state["steps"]} steps). This run starts a new ledger, '
                'which is only valid if its private data are disjoint from '
                'that run\'s; on the same data the two epsilons add up')

    def before_save_checkpoint(self, runner, checkpoint: Dict) -> None:
        checkpoint[LEDGER_KEY] = self.ledger.state_dict()
        checkpoint[PLAN_KEY] = self._plan

    def before_train(self, runner) -> None:
        ow = self._optim_wrapper(runner)
        sampler = self._sampler(runner)
        q = sampler.sample_rate
        remaining = runner.max_iters - runner.iter
        if remaining <= 0:
            raise NotPrivateError('no training steps left to take')
        t0 = time.time()
        prior = list(self.ledger.segments)
        plan = dict(target_epsilon=self.target_epsilon, delta=self.delta,
                    sample_rate=q, total_steps=self.ledger.steps + remaining)
        resumed = self._resumed_plan or {}
        if (self.noise_multiplier is None and resumed.get(
                'noise_multiplier') is not None and all(
                    resumed.get(k) == v for k, v in plan.items())):
            # Same plan as the checkpoint's run: keep its sigma, whose
            # calibration already covered the whole run.
            sigma = resumed['noise_multiplier']
            self.allowed_steps = plan['total_steps']
            how = 'calibrated (PRV) for the same plan before resuming'
        elif self.noise_multiplier is None:
            sigma = calibrate_noise_multiplier(
                self.target_epsilon, self.delta, q, remaining,
                prior_segments=prior)
            self.allowed_steps = self.ledger.steps + remaining
            how = f'calibrated (PRV) for epsilon={self.target_epsilon}'
        else:
            sigma = float(self.noise_multiplier)
            self.allowed_steps = self._steps_within_budget(
                prior, sigma, q, remaining)
            how = 'from the config'
        planned_eps = (epsilon_prv(
            prior + [(sigma, q, remaining)], self.delta)
                       if sigma > 0 else math.inf)
        self._plan = dict(plan, noise_multiplier=sigma)
        ow.configure(sigma, q, sampler.expected_batch_size, self.ledger,
                     self.allowed_steps)
        if sigma > 0:
            self.tracker = EpsilonTracker(self.ledger, sigma, q, remaining,
                                          planned_eps)
        ow.stages = self._build_stages(runner, sampler)
        runner.logger.info(
            f'[privacy] noise_multiplier={sigma:.4f} ({how}), '
            f'sample_rate={q:.5g} (expected batch '
            f'{sampler.expected_batch_size} of N_private='
            f'{sampler.num_private}), steps planned={remaining} '
            f'(already taken {self.ledger.steps}), max_grad_norm='
            f'{ow.max_grad_norm}, delta={self.delta:.3g}; epsilon after '
            f'the plan <= {planned_eps:.4f} (PRV); {time.time() - t0:.1f}s')

    def _build_stages(self, runner, sampler) -> list:
        """Projection (PDP) and/or public-feature (FDP) stages; both make
        the hybrid."""
        model = self._model(runner)
        stages = []
        if self.projection is not None:
            stages.append(ProjectionStage(
                model, self._public_dataset(runner, sampler),
                **self.projection))
        if self.public_features is not None:
            cfg = dict(self.public_features)
            loader = build_public_feature_loader(
                runner.cfg.train_dataloader, cfg.pop('transform', None),
                cfg.pop('batch_size', None), cfg.pop('seed', None))
            stages.append(PublicFeatureStage(model, loader, **cfg))
        names = [type(s).__name__ for s in stages]
        runner.logger.info(f'[privacy] method: DP-SGD'
                           f'{" + " + " + ".join(names) if names else ""}')
        return stages

    def _public_dataset(self, runner, sampler):
        private = runner.train_dataloader.dataset
        if self.public_data.get('num_samples'):
            return Subset(private, sampler.public_indices)
        dataset = DATASETS.build(copy.deepcopy(self.public_data['dataset']))
        if hasattr(dataset, 'full_init'):
            dataset.full_init()
        check_disjoint(dataset, private)
        return dataset

    def _steps_within_budget(self, prior, sigma, q, remaining):
        """Total steps (taken + more) whose epsilon stays within the target,
        for an explicit noise multiplier."""
        if self.target_epsilon is None:
            return None
        if sigma == 0:
            raise NotPrivateError(
                'noise_multiplier=0 gives no privacy; drop target_epsilon '
                'to train without a guarantee')
        tracker = EpsilonTracker(self.ledger, sigma, q, remaining)
        base = self.ledger.steps
        if tracker.epsilon_after(remaining) <= self.target_epsilon:
            return base + remaining
        lo, hi = 0, remaining  # lo fits, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if tracker.epsilon_after(mid) <= self.target_epsilon:
                lo = mid
            else:
                hi = mid
        return base + lo

    # -- per iteration -----------------------------------------------------
    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if batch_idx == 0:
            model = self._model(runner)
            check_no_cross_sample_modules(model)
            self._buffers = snapshot_buffers(model)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self._buffers is not None:
            changed = changed_buffers(self._model(runner), self._buffers)
            self._buffers = None
            if changed:
                raise NotPrivateError(
                    f'a private step changed model buffers {changed[:10]}: '
                    'they learn from private data without noise. Remove '
                    'the module or keep it in eval mode')
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
            f'{ow.sample_rate:.5g}, max_grad_norm={ow.max_grad_norm}. Privacy '
            'unit: one person instance')

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


def build_public_feature_loader(train_loader_cfg: Dict,
                                transform: Optional[Dict] = None,
                                batch_size: Optional[int] = None,
                                seed: Optional[int] = None):
    """A loader of public features of the training records, independent of
    the private Poisson sampler: its own shuffling sampler (seed ``None``:
    a fresh secret one) and the training pipeline with ``transform``
    inserted right after ``TopdownAffine``."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(train_loader_cfg)
    cfg.pop('batch_sampler', None)
    cfg['collate_fn'] = dict(type='pseudo_collate')
    cfg['batch_size'] = batch_size or cfg.get('batch_size')
    cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)
    if seed is not None:
        cfg['sampler']['seed'] = seed
    pipeline = list(cfg['dataset']['pipeline'])
    types = [t.get('type') for t in pipeline]
    if 'TopdownAffine' not in types:
        raise ValueError('privacy.public_features needs a TopdownAffine step '
                         'in train_dataloader.dataset.pipeline')
    at = types.index('TopdownAffine') + 1
    pipeline.insert(at, transform or dict(type='PublicFeatureBlur'))
    cfg['dataset']['pipeline'] = pipeline
    return Runner.build_dataloader(cfg, seed=None)
