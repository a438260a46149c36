"""Refuse models whose per-sample gradients would not be per-sample."""
from typing import Dict, List

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..privacy import NotPrivateError
from .batch_norm import FrozenBatchNorm

GROUPNORM_FIX = (
    "Let mmpose_dp convert them: privacy.batch_norm=dict(mode='freeze') "
    "(statistics from the loaded public weights, fixed) or mode="
    "'group_norm' (training from scratch); the default 'auto' picks one. Or "
    "use GroupNorm in the config, e.g. norm_cfg=dict(type='GN', "
    "num_groups=32) for the backbone (16 for HRNet-W48) and the head.")


def _keeps_running_statistics(module: nn.Module) -> bool:
    """Any module that would learn statistics from its inputs in train
    mode: BatchNorm/SyncBN of torch or MMCV (MMSyncBN), InstanceNorm with
    running statistics, or a module that owns ``running*`` buffers."""
    if getattr(module, 'track_running_stats', False):
        return True
    return any(name.startswith('running')
               for name, _ in module.named_buffers(recurse=False))


def cross_sample_modules(model: nn.Module) -> List[str]:
    """Names of modules that mix samples or learn statistics in train mode:
    BatchNorm/SyncBN (trainable or frozen; torch's or MMCV's MMSyncBN) and
    any module with running statistics. :class:`FrozenBatchNorm` is a fixed
    per-sample map in either mode (its statistics are read, never written)."""
    bad = []
    for name, module in model.named_modules():
        if not module.training or isinstance(module, FrozenBatchNorm):
            continue
        if isinstance(module, (_BatchNorm, nn.SyncBatchNorm)):
            bad.append(f'{name} ({type(module).__name__})')
        elif _keeps_running_statistics(module):
            bad.append(f'{name} ({type(module).__name__}, running stats)')
    return bad


def check_no_cross_sample_modules(model: nn.Module) -> None:
    bad = cross_sample_modules(model)
    if bad:
        shown = ', '.join(bad[:10]) + (' ...' if len(bad) > 10 else '')
        raise NotPrivateError(
            f'{len(bad)} module(s) mix samples of a batch or update buffers '
            f'from private data in train mode: {shown}. {GROUPNORM_FIX}')


def snapshot_buffers(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def changed_buffers(model: nn.Module,
                    snapshot: Dict[str, torch.Tensor]) -> List[str]:
    """Buffers whose value differs from ``snapshot`` (a private step must
    not change any)."""
    changed = []
    for name, buf in model.named_buffers():
        old = snapshot.get(name)
        if old is None or old.shape != buf.shape or not torch.equal(
                old, buf.detach()):
            changed.append(name)
    return changed
