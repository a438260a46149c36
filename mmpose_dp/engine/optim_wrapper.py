"""DP OptimWrapper: clip per sample -> sum -> noise once -> / B -> step."""
import contextlib
from typing import Callable, List, Optional

import torch
from mmengine.dist import all_reduce, get_dist_info
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ..privacy import (NoiseStream, PerSampleGradients, PrivacyLedger,
                       add_gaussian_noise, clip_factors, clipped_sum,
                       per_sample_norms, sum_per_unit)

#: A post-processing stage: (wrapper, noisy averaged gradients) -> gradients.
GradientStage = Callable[['DPOptimWrapper', List[torch.Tensor]],
                         List[torch.Tensor]]


class PrivacyBudgetExceeded(RuntimeError):
    """The next step would spend more than the configured epsilon."""


@OPTIM_WRAPPERS.register_module()
class DPOptimWrapper(OptimWrapper):
    """An OptimWrapper that takes DP-SGD steps.

    One *logical* step: for each micro-batch, ``update_params`` back-propagates
    the private loss with per-sample hooks on, clips every sample's gradient
    to ``max_grad_norm`` (flat, over all trainable parameters) and adds it to
    a running sum. :meth:`private_step` then adds ``N(0, (sigma C)^2)`` once,
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
    """

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 max_grad_norm: float,
                 noise_seed: Optional[int] = None,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        if clip_grad:
            raise ValueError(
                'optim_wrapper.clip_grad clips the *averaged* gradient and '
                'gives no privacy; remove it and set privacy.max_grad_norm')
        if accumulative_counts != 1:
            raise ValueError(
                'optim_wrapper.accumulative_counts is not supported with DP; '
                'set privacy.max_physical_batch_size to split a logical '
                'batch into micro-batches instead')
        super().__init__(optimizer)
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
        self.per_sample: Optional[PerSampleGradients] = None
        self.stages: List[GradientStage] = []
        self._clipped_sum: Optional[List[torch.Tensor]] = None
        self._micro_batch_units: Optional[List[int]] = None

    # -- set-up (by PrivacyHook) -------------------------------------------
    def attach(self, model: nn.Module, loss_reduction: str) -> None:
        """Compute per-sample gradients of ``model`` (the unwrapped module)."""
        self.per_sample = PerSampleGradients(model, loss_reduction)
        optimized = {id(p) for g in self.optimizer.param_groups
                     for p in g['params']}
        missing = [p for p in self.per_sample.params if id(p) not in optimized]
        if missing:
            raise ValueError(
                f'{len(missing)} trainable parameters are not in the '
                'optimizer; freeze them (requires_grad=False) so that they '
                'are excluded from clipping and noise')

    def configure(self, noise_multiplier: float, sample_rate: float,
                  expected_batch_size: float, ledger: PrivacyLedger,
                  max_steps: Optional[int] = None) -> None:
        if noise_multiplier < 0:
            raise ValueError('noise_multiplier must be >= 0')
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.expected_batch_size = float(expected_batch_size)
        self.ledger = ledger
        self.max_steps = max_steps

    @property
    def params(self) -> List[nn.Parameter]:
        if self.per_sample is None:
            raise RuntimeError(
                'DPOptimWrapper is not attached to a model; add '
                "dict(type='PrivacyHook') to custom_hooks")
        return self.per_sample.params

    # -- per micro-batch ---------------------------------------------------
    @contextlib.contextmanager
    def optim_context(self, model: nn.Module):
        """The private forward: per-sample hooks on, and no DDP gradient
        all-reduce (only clipped sums are ever reduced)."""
        sync = model.no_sync() if hasattr(model, 'no_sync') else \
            contextlib.nullcontext()
        with sync, self.per_sample_context():
            yield

    def per_sample_context(self):
        if self.per_sample is None:
            raise RuntimeError(
                'DPOptimWrapper is not attached to a model; add '
                "dict(type='PrivacyHook') to custom_hooks")
        return self.per_sample.private_forward()

    def expect_micro_batch(self, units: List[int]) -> None:
        """Announce the next private micro-batch: ``units[i]`` is the privacy
        unit (0, 1, ...) of its i-th sample. Every per-sample gradient must
        then have ``len(units)`` rows, and the samples of one unit are
        summed before clipping (one contribution per unit)."""
        self._micro_batch_units = list(units)

    def update_params(self, loss: torch.Tensor, step_kwargs=None,
                      zero_kwargs=None) -> None:
        """Back-propagate one private micro-batch and accumulate its clipped
        per-unit gradients. The step itself is :meth:`private_step`."""
        self.backward(loss)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        units = self._micro_batch_units
        if units is None:
            raise RuntimeError(
                'announce each private micro-batch with expect_micro_batch() '
                '(DPEpochBasedTrainLoop does) before its backward')
        self._micro_batch_units = None
        loss.backward(**kwargs)
        self._inner_count += 1
        self.clip_and_accumulate(self.per_sample.pop(len(units)), units)
        for p in self.params:
            p.grad = None  # the unclipped batch gradient must not be used

    def clip_and_accumulate(self, grad_samples: List[torch.Tensor],
                            units: List[int]) -> None:
        """Sum each unit's samples, clip each unit to C, add to the sum."""
        if units != list(range(len(units))):
            grad_samples = sum_per_unit(
                grad_samples, torch.tensor(units), max(units) + 1)
        factors = clip_factors(per_sample_norms(grad_samples),
                               self.max_grad_norm)
        summed = clipped_sum(grad_samples, factors)
        if self._clipped_sum is None:
            self._clipped_sum = summed
        else:
            for acc, s in zip(self._clipped_sum, summed):
                acc.add_(s)

    # -- per logical step --------------------------------------------------
    def add_noise(self, summed: List[torch.Tensor]) -> None:
        """Add N(0, (sigma C)^2) to the clipped sum, once over all processes
        (on process 0), from the generator of this ledger step."""
        rank, _ = get_dist_info()
        if rank != 0:
            return
        generator = self.noise.generator(self.params[0].device, rank,
                                         self.ledger.steps)
        add_gaussian_noise(summed, self.noise_multiplier * self.max_grad_norm,
                           generator)

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
                'DPOptimWrapper has no noise multiplier yet; add '
                "dict(type='PrivacyHook') to custom_hooks")
        if self._clipped_sum is None:  # empty batch on this process
            summed = [torch.zeros_like(p) for p in self.params]
        else:
            summed = self._clipped_sum
        self.add_noise(summed)
        self.reduce(summed)
        self.scale(summed)
        return summed

    def private_step(self) -> None:
        """Noise, post-process and apply one logical step; count it."""
        if self.max_steps is not None and self.ledger.steps >= self.max_steps:
            raise PrivacyBudgetExceeded(
                f'step {self.ledger.steps + 1} would exceed the privacy '
                f'budget ({self.max_steps} steps allowed)')
        grads = self.noisy_gradient()
        for stage in self.stages:
            grads = stage(self, grads)
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._clipped_sum = None
        self.ledger.step(self.noise_multiplier, self.sample_rate)

    def step(self, **kwargs) -> None:
        raise RuntimeError(
            'DPOptimWrapper steps through private_step() (driven by '
            "DPEpochBasedTrainLoop); set train_cfg=dict(type="
            "'DPEpochBasedTrainLoop') or use runner_type='DPRunner'")
