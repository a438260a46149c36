"""DP OptimWrapper: clip per unit -> sum -> noise once -> / B -> step."""
import contextlib
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_dist_info
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ..privacy import NoiseStream, NotPrivateError, PrivacyLedger
from ..privacy.mechanisms import GaussianMechanism, Mechanism
from ..privacy.engines import BatchLoss, ClippingEngine, build_engine
from .mmengine_batch import MMEngineBatchLoss
from .release import PrivacyBudgetExceeded, Release
from .trainable_changes import trainable_change

#: A post-processing stage: (wrapper, noisy averaged gradients) -> gradients.
GradientStage = Callable[['DPOptimWrapper', List[torch.Tensor]],
                         List[torch.Tensor]]


@OPTIM_WRAPPERS.register_module()
class DPOptimWrapper(OptimWrapper):
    """An OptimWrapper that takes DP-SGD steps.

    One *logical* step: for each micro-batch, :meth:`private_micro_batch`
    has the clipping engine (``privacy.engine``: Opacus hooks, torch.func
    vmap, or the fastest exact one) clip every privacy unit's gradient to
    ``max_grad_norm`` (flat, over all trainable parameters) and adds the sum
    to a running sum. :meth:`private_step` then adds ``N(0, (sigma C)^2)`` once,
    sums over processes, divides by the *expected* batch size, applies the
    post-processing stages (projection, public-feature gradient) and calls
    the wrapped optimizer. An empty batch is a noise-only step.

    The noise multiplier, sample rate, expected batch and step limit are set
    by :class:`PrivacyHook` (``configure``) before the first step; until then
    a step is refused.

    Args:
        optimizer: the wrapped optimizer (from the config's ``optimizer``).
        max_grad_norm: the clipping norm C.
        noise_seed: key of the noise stream; ``None`` (default) draws a
            secret one from the OS entropy pool. A fixed key lets anyone who
            knows it subtract the noise: tests and debugging only.
        engine: the clipping engine, ``'auto'`` (default), ``'hooks'`` or
            ``'vmap'`` (see :mod:`mmpose_dp.privacy.engines`).
    """

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 max_grad_norm: float,
                 noise_seed: Optional[int] = None,
                 engine: str = 'auto',
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        if accumulative_counts != 1:
            raise ValueError(
                'optim_wrapper.accumulative_counts is not supported with DP; '
                'set privacy.max_physical_batch_size to split a logical '
                'batch into micro-batches instead')
        # MMEngine's clip_grad (stock configs such as ViTPose's) is applied
        # to the noisy update, after the stages: post-processing, no
        # privacy. The guarantee comes from privacy.max_grad_norm.
        super().__init__(optimizer, clip_grad=clip_grad)
        if clip_grad:
            print_log(
                f'[privacy] optim_wrapper.clip_grad={dict(clip_grad)} clips '
                'the noisy update (post-processing); per-sample clipping is '
                f'privacy.max_grad_norm={max_grad_norm}', logger='current')
        if max_grad_norm <= 0:
            raise ValueError(
                f'privacy.max_grad_norm must be > 0, got {max_grad_norm}')
        self.max_grad_norm = float(max_grad_norm)
        self.noise = NoiseStream(noise_seed)
        if self.noise.fixed:
            print_log(
                '[privacy] privacy.noise_seed is fixed: whoever knows it can '
                'subtract the noise, which VOIDS the guarantee. Use it for '
                'tests and debugging only', logger='current', level=30)
        self.noise_multiplier: Optional[float] = None
        self.sample_rate: Optional[float] = None
        self.expected_batch_size: Optional[float] = None
        self.max_steps: Optional[int] = None
        self.ledger: Optional[PrivacyLedger] = None
        #: Whose noise each step gets (the ledger's mechanism, set by
        #: configure; DP-SGD's white Gaussian noise by default).
        self.mechanism: Mechanism = GaussianMechanism()
        self.engine_name = engine
        self.engine: Optional[ClippingEngine] = None
        #: Audit canaries (GradientCanaries), set by tools/audit_privacy.py:
        #: added to the clipped sum before the noise, scored on the release.
        self.canaries = None
        self.stages: List[GradientStage] = []
        #: Called with a :class:`Release` after every step's noise and
        #: reduction (tools/check_sensitivity.py); empty in training.
        self.release_observers: List[Callable[[Release], None]] = []
        self._clipped_sum: Optional[List[torch.Tensor]] = None
        self._step_units = 0
        self._step_micro_batches = 0

    # -- set-up (by PrivacyHook) -------------------------------------------
    def attach(self, model: nn.Module, loss_reduction: str,
               batch_loss: Optional[BatchLoss] = None) -> None:
        """Clip per-sample gradients of ``model`` (the unwrapped module)
        with the configured engine; ``batch_loss`` says how a batch becomes
        a loss (default: an MMEngine model's own ``train_step`` way)."""
        self.engine = build_engine(self.engine_name, model,
                                   batch_loss or MMEngineBatchLoss(),
                                   loss_reduction)
        optimized = {id(p) for g in self.optimizer.param_groups
                     for p in g['params']}
        missing = [p for p in self.engine.params if id(p) not in optimized]
        if missing:
            raise ValueError(
                f'{len(missing)} trainable parameters are not in the '
                'optimizer; freeze them (requires_grad=False) so that they '
                'are excluded from clipping and noise')

    def configure(self, noise_multiplier: float, sample_rate: float,
                  expected_batch_size: float, ledger: PrivacyLedger,
                  max_steps: Optional[int] = None,
                  stages: Sequence[GradientStage] = ()) -> None:
        """The mechanism of the steps to come: sigma, q, the expected batch
        (the divisor), the ledger that counts them, the step limit of the
        budget, and the post-processing stages."""
        if noise_multiplier < 0:
            raise ValueError('noise_multiplier must be >= 0')
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.expected_batch_size = float(expected_batch_size)
        self.ledger = ledger
        self.mechanism = ledger.mechanism
        self.max_steps = max_steps
        self.stages = list(stages)

    def setup(self, model: nn.Module, loss_reduction: str,
              noise_multiplier: float, sample_rate: float,
              expected_batch_size: float, ledger: PrivacyLedger,
              max_steps: Optional[int] = None,
              stages: Sequence[GradientStage] = (),
              batch_loss: Optional[BatchLoss] = None) -> 'DPOptimWrapper':
        """:meth:`attach` and :meth:`configure` in one call (PrivacyHook
        does them at ``before_run`` and ``before_train``)."""
        self.attach(model, loss_reduction, batch_loss)
        self.configure(noise_multiplier, sample_rate, expected_batch_size,
                       ledger, max_steps, stages)
        return self

    @property
    def params(self) -> List[nn.Parameter]:
        if self.engine is None:
            raise RuntimeError(
                'DPOptimWrapper is not attached to a model; build the '
                "run with runner_type='DPRunner', which adds the privacy hooks")
        return self.engine.params

    # -- per micro-batch ---------------------------------------------------
    def private_micro_batch(self, model: nn.Module, data_batch,
                            units: List[int]) -> Dict[str, torch.Tensor]:
        """Clip and accumulate one private micro-batch; ``units[i]`` is the
        privacy unit (0, 1, ...) of its i-th sample, whose samples are
        summed before clipping (one contribution per unit). DDP's own
        gradient all-reduce is off: only clipped sums are ever reduced.
        Returns the (un-noised) loss, for an opted-in log only."""
        if self.engine is None:
            raise RuntimeError(
                'DPOptimWrapper is not attached to a model; build the '
                "run with runner_type='DPRunner', which adds the privacy hooks")
        self._check_trainable(at_step_start=self._clipped_sum is None)
        batch = self.engine.batch_loss.prepare(model, data_batch)
        if self.engine.batch_loss.num_samples(batch) != len(units):
            raise ValueError('one privacy unit id per sample is needed')
        sync = model.no_sync() if hasattr(model, 'no_sync') else \
            contextlib.nullcontext()
        with sync:
            summed, loss = self.engine.clipped_sum(batch, units,
                                                   self.max_grad_norm)
        self._inner_count += 1
        self._step_units += len(set(units))
        self._step_micro_batches += 1
        self.accumulate(summed)
        return dict(loss=loss)

    def _check_trainable(self, at_step_start: bool) -> None:
        """The optimizer only ever applies the engine's gradients, so the
        engine must know every trainable parameter: a parameter unfrozen
        (or frozen) since the engine was built, e.g. by a hook doing
        gradual unfreezing, rebuilds it at the start of a step (the new
        parameters are clipped and noised from then on, the engine is
        checked again); within a step it is refused."""
        change = trainable_change(self.engine)
        if change is None:
            return
        if not at_step_start:
            raise NotPrivateError(
                f'the trainable parameters changed within a DP step ({change})'
                ': their gradients would not be clipped and noised with the '
                "step's. Change requires_grad only between steps (e.g. in "
                'before_train_epoch or before_train_iter)')
        print_log(f'[privacy] {change}: the clipping engine is rebuilt, so '
                  'from this step on every trainable parameter is clipped '
                  'and noised (and no other gets a gradient)',
                  logger='current', level=30)
        engine = self.engine
        self.attach(engine.model, engine.loss_reduction, engine.batch_loss)
        for stage in self.stages:
            if hasattr(stage, 'reset'):
                stage.reset()

    def accumulate(self, summed: List[torch.Tensor]) -> None:
        """Add a micro-batch's clipped sum to the step's."""
        if self._clipped_sum is None:
            self._clipped_sum = summed
        else:
            for acc, s in zip(self._clipped_sum, summed):
                acc.add_(s)

    def update_params(self, loss: torch.Tensor, step_kwargs=None,
                      zero_kwargs=None) -> None:
        raise RuntimeError(
            'DPOptimWrapper takes private micro-batches through '
            'private_micro_batch() (DPEpochBasedTrainLoop does), never an '
            'already reduced loss')

    # -- per logical step --------------------------------------------------
    def add_noise(self, summed: List[torch.Tensor]) -> None:
        """Add the mechanism's noise for this ledger step (DP-SGD: N(0,
        (sigma C)^2) from the step's generator) to the clipped sum, once
        over all processes (on process 0)."""
        rank, _ = get_dist_info()
        if rank != 0:
            return
        self.mechanism.add_noise(summed,
                                 self.noise_multiplier * self.max_grad_norm,
                                 self.noise, rank, self.ledger.steps)

    def reduce(self, summed: List[torch.Tensor]) -> None:
        """Sum the noisy clipped sums of all processes (in place)."""
        if get_dist_info()[1] > 1:
            for t in summed:
                all_reduce(t, op='sum')

    def scale(self, summed: List[torch.Tensor]) -> None:
        """Divide by the *expected* batch size, a public constant."""
        for t in summed:
            t.div_(self.expected_batch_size)

    def noisy_gradient(self) -> List[torch.Tensor]:
        """(sum of clipped per-unit gradients + N(0, (sigma C)^2 I)) / B,
        with the noise drawn once per step over all processes."""
        if self.noise_multiplier is None or self.ledger is None:
            raise RuntimeError(
                'DPOptimWrapper has no noise multiplier yet; build the '
                "run with runner_type='DPRunner', which adds the privacy hooks")
        if self._clipped_sum is None:  # empty batch on this process
            self._check_trainable(at_step_start=True)
            summed = [torch.zeros_like(p) for p in self.params]
        else:
            summed = self._clipped_sum
        clipped = ([t.detach().clone() for t in summed]
                   if self.release_observers else [])
        audit = self.canaries is not None and get_dist_info()[0] == 0
        if audit:  # tools/audit_privacy.py only
            self.canaries.add(summed)
        self.add_noise(summed)
        self.reduce(summed)
        if audit:
            self.canaries.observe(summed)
        if self.release_observers:
            release = Release(
                self.ledger.steps, clipped, [t.detach().clone()
                                             for t in summed],
                self.expected_batch_size,
                self.noise_multiplier * self.max_grad_norm, self.sample_rate,
                self._step_units, self._step_micro_batches)
            for observer in self.release_observers:
                observer(release)
        self.scale(summed)
        return summed

    def private_step(self) -> None:
        """Noise, post-process and apply one logical step; count it."""
        if self.max_steps is not None and self.ledger.steps >= self.max_steps:
            raise PrivacyBudgetExceeded(
                f'step {self.ledger.steps + 1} would exceed the privacy '
                f'budget ({self.max_steps} steps allowed)')
        if self._clipped_sum is not None:
            self._check_trainable(at_step_start=False)
        grads = self.noisy_gradient()
        for stage in self.stages:
            grads = stage(self, grads)
        # Counted (and, with a journal, on disk) before anything of this
        # step is applied, so no released update goes uncounted.
        self.ledger.step(self.noise_multiplier, self.sample_rate)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.params, grads):
            p.grad = g
        if self.clip_grad_kwargs:
            self._clip_grad()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._clipped_sum = None
        self._step_units = self._step_micro_batches = 0

    def step(self, **kwargs) -> None:
        raise RuntimeError(
            'DPOptimWrapper steps through private_step() (driven by '
            "DPEpochBasedTrainLoop); set train_cfg=dict(type="
            "'DPEpochBasedTrainLoop') or use runner_type='DPRunner'")
