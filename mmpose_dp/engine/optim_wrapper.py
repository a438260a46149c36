"""DP OptimWrapper: clip per unit -> sum -> noise once -> / B -> step."""
import contextlib
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_dist_info
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ..privacy import NoiseStream, PrivacyLedger
from ..privacy.mechanisms import GaussianMechanism, Mechanism
from ..privacy.engines import BatchLoss, ClippingEngine, build_engine
from .fused_optimizer import prefer_fused
from .mmengine_batch import MMEngineBatchLoss
from .release import PrivacyBudgetExceeded, Release
from .trainable_changes import follow_trainable_changes
from .wrapper_settings import check_optimized, check_settings, warn_if_fixed

NOT_ATTACHED = ('DPOptimWrapper is not attached to a model; build the run '
                "with runner_type='DPRunner', which adds the privacy hooks")

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
        check_settings(max_grad_norm, accumulative_counts, clip_grad)
        # MMEngine's clip_grad (stock configs such as ViTPose's) is applied
        # to the noisy update, after the stages: post-processing, no
        # privacy. The guarantee comes from privacy.max_grad_norm.
        super().__init__(optimizer, clip_grad=clip_grad)
        self.max_grad_norm = float(max_grad_norm)
        self.noise = NoiseStream(noise_seed)
        warn_if_fixed(self.noise)
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
        #: Called on process 0 with the step's clipped sum just before the
        #: noise, to add to it in place (the audit's canaries); empty in
        #: training.
        self.pre_noise_contributors: List[Callable[[List[torch.Tensor]],
                                                   None]] = []
        self.stages: List[GradientStage] = []
        #: Called with a :class:`Release` after every step's noise and
        #: reduction (tools/check_sensitivity.py); empty in training.
        self.release_observers: List[Callable[[Release], None]] = []
        #: Replays of recorded micro-batches (CUDA graphs), set by the loop
        #: with ``privacy.cuda_graphs``; None: the engine, eagerly.
        self.graphed = None
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
        check_optimized(self.engine.params, self.optimizer)
        if prefer_fused(self.optimizer):
            print_log(f'[privacy] {type(self.optimizer).__name__}: its fused '
                      'kernel (set optimizer.fused=False in the config to '
                      'keep the per-parameter loop)', logger='current')

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
            raise RuntimeError(NOT_ATTACHED)
        return self.engine.params

    # -- per micro-batch ---------------------------------------------------
    def private_micro_batch(self, model: nn.Module, data_batch,
                            units: List[int],
                            padded: int = 0) -> Dict[str, torch.Tensor]:
        """Clip and accumulate one private micro-batch; ``units[i]`` is the
        privacy unit (0, 1, ...) of its i-th sample, whose samples are
        summed before clipping (one contribution per unit). The last
        ``padded`` samples are public padding (a static batch shape,
        :mod:`.static_batches`), which adds nothing. DDP's own gradient
        all-reduce is off: only clipped sums are ever reduced. Returns the
        (un-noised) loss, for an opted-in log only."""
        if self.engine is None:
            raise RuntimeError(NOT_ATTACHED)
        self._check_trainable(at_step_start=self._clipped_sum is None)
        batch = self.engine.batch_loss.prepare(model, data_batch)
        if self.engine.batch_loss.num_samples(batch) != len(units):
            raise ValueError('one privacy unit id per sample is needed')
        sync = model.no_sync() if hasattr(model, 'no_sync') else \
            contextlib.nullcontext()
        clipper = self.graphed or self.engine
        with sync:
            summed, loss = clipper.clipped_sum(batch, units,
                                               self.max_grad_norm, padded)
        self._inner_count += 1
        self._step_units += len(set(units)) - padded
        self._step_micro_batches += 1
        self.accumulate(summed)
        return dict(loss=loss)

    def _check_trainable(self, at_step_start: bool) -> None:
        follow_trainable_changes(self, at_step_start)

    def accumulate(self, summed: List[torch.Tensor]) -> None:
        """Add a micro-batch's clipped sum to the step's."""
        if self._clipped_sum is None:
            self._clipped_sum = summed
        else:
            torch._foreach_add_(self._clipped_sum, list(summed))

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
        if summed:
            torch._foreach_div_(list(summed), float(self.expected_batch_size))

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
        if get_dist_info()[0] == 0:
            for contribute in self.pre_noise_contributors:
                contribute(summed)
        self.add_noise(summed)
        self.reduce(summed)
        if self.release_observers:
            release = Release.of(self, clipped, summed)
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
