"""What a DPOptimWrapper refuses or warns about in its settings."""
from typing import Optional, Sequence

import torch
from mmengine.logging import print_log


def check_settings(max_grad_norm: float, accumulative_counts: int,
                   clip_grad: Optional[dict]) -> None:
    if accumulative_counts != 1:
        raise ValueError(
            'optim_wrapper.accumulative_counts is not supported with DP; '
            'set privacy.max_physical_batch_size to split a logical '
            'batch into micro-batches instead')
    if max_grad_norm <= 0:
        raise ValueError(
            f'privacy.max_grad_norm must be > 0, got {max_grad_norm}')
    if clip_grad:
        print_log(
            f'[privacy] optim_wrapper.clip_grad={dict(clip_grad)} clips '
            'the noisy update (post-processing); per-sample clipping is '
            f'privacy.max_grad_norm={max_grad_norm}', logger='current')


def warn_if_fixed(noise) -> None:
    """A known noise key lets anyone subtract the noise."""
    if noise.fixed:
        print_log(
            '[privacy] privacy.noise_seed is fixed: whoever knows it can '
            'subtract the noise, which VOIDS the guarantee. Use it for '
            'tests and debugging only', logger='current', level=30)


def check_optimized(params: Sequence[torch.Tensor],
                    optimizer: torch.optim.Optimizer) -> None:
    """Every clipped parameter must be one the optimizer updates."""
    optimized = {id(p) for g in optimizer.param_groups for p in g['params']}
    missing = [p for p in params if id(p) not in optimized]
    if missing:
        raise ValueError(
            f'{len(missing)} trainable parameters are not in the '
            'optimizer; freeze them (requires_grad=False) so that they '
            'are excluded from clipping and noise')
