"""BatchNorm for private training: freeze its statistics or replace it.

In train mode a BatchNorm layer normalises each sample with statistics of
the whole batch (so one sample's gradient depends on the others) and learns
running statistics from private data (buffers that leave the model without
noise). DP-SGD allows neither. :func:`convert_batch_norm` removes both, in
place, in one of two ways:

- ``'freeze'``: :class:`FrozenBatchNorm` normalises with the statistics it
  was given (e.g. by an ImageNet or MMPose checkpoint), always, and never
  updates them. A per-channel affine map remains, optionally trainable, with
  exact per-sample gradients under Opacus
  (:func:`frozen_batch_norm_grad_sample`).
- ``'group_norm'``: ``nn.GroupNorm``, a per-sample normalisation that Opacus
  already supports; its affine parameters start afresh.
"""
from typing import Dict, List, Sequence, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .frozen_batch_norm import FrozenBatchNorm

BATCH_NORM_MODES = ('freeze', 'group_norm')


def _is_mmcv_sync_batch_norm(module: nn.Module) -> bool:
    # By class, not isinstance: importing mmcv.ops needs the compiled ops,
    # and building one needs a process group.
    return any(c.__name__ == 'SyncBatchNorm'
               and c.__module__.startswith('mmcv.')
               for c in type(module).__mro__)


def is_batch_norm(module: nn.Module) -> bool:
    """torch's BatchNorm1d/2d/3d and SyncBatchNorm, or MMCV's
    ``SyncBatchNorm`` (MMSyncBN)."""
    return isinstance(module, _BatchNorm) or _is_mmcv_sync_batch_norm(module)


def group_count(num_channels: int, num_groups: int) -> int:
    """The largest divisor of ``num_channels`` that is ``<= num_groups``
    (``GroupNorm`` needs the channels to split evenly)."""
    if num_channels < 1 or num_groups < 1:
        raise ValueError(
            f'need positive channels and groups, got {num_channels} channels '
            f'and num_groups={num_groups}')
    return max(g for g in range(1, min(num_groups, num_channels) + 1)
               if num_channels % g == 0)


def _replacement(name: str, bn: nn.Module, mode: str, num_groups: int,
                 trainable_affine: bool) -> nn.Module:
    if torch.nn.parameter.is_lazy(getattr(bn, 'weight', None)) or (
            torch.nn.parameter.is_lazy(getattr(bn, 'running_mean', None))):
        raise ValueError(
            f'{name} ({type(bn).__name__}) is lazy and not initialised yet; '
            'run one forward (or build it with num_features) before '
            'converting it')
    if mode == 'freeze':
        if getattr(bn, 'running_mean', None) is None:
            raise ValueError(
                f'{name} ({type(bn).__name__}) has no running statistics '
                '(track_running_stats=False), so there is nothing to '
                "freeze; use mode='group_norm'")
        return FrozenBatchNorm.from_batch_norm(bn, trainable_affine)
    channels = bn.num_features
    ref = bn.weight if bn.affine else bn.running_mean
    gn = nn.GroupNorm(group_count(channels, num_groups), channels,
                      eps=bn.eps, affine=bn.affine)
    if ref is not None:
        gn = gn.to(device=ref.device, dtype=ref.dtype)
    for p in gn.parameters():
        p.requires_grad_(trainable_affine)
    return gn


def convert_batch_norm(model: nn.Module, mode: str, num_groups: int = 32,
                       trainable_affine: bool = True,
                       affine_only: Sequence[str] = ()
                       ) -> Dict[str, Union[int, List[str]]]:
    """Replace every BatchNorm-like module of ``model`` in place.

    Call it before any optimizer is built: the replacements carry new
    parameter objects.

    Args:
        model: the model; its BatchNorm children are swapped on their
            parents (the model itself cannot be a BatchNorm).
        mode: ``'freeze'`` (:class:`FrozenBatchNorm` with the layer's current
            affine parameters, statistics and eps, so load the pretrained
            weights first or afterwards into the same keys) or
            ``'group_norm'`` (``nn.GroupNorm`` with weight 1 and bias 0).
        num_groups: ``'group_norm'`` only: the wanted number of groups; a
            layer whose channels it does not divide gets the largest divisor
            below it (reported in ``'regrouped'``).
        trainable_affine: whether the new affine parameters require grad.
        affine_only: ``'group_norm'`` only: layers made
            :class:`FrozenBatchNorm` instead (those on one value per
            channel, :func:`~.single_value_norms.single_value_batch_norms`).

    Returns:
        ``{'count': n, 'names': [...], 'regrouped': [...]}``: how many layers
        were replaced, the module names they were replaced under (a shared
        layer appears under each name, counted once), and for
        ``'group_norm'`` the layers whose group count differs from
        ``num_groups`` and (``'affine_only'``) those frozen instead.
    """
    if mode not in BATCH_NORM_MODES:
        raise ValueError(f'unknown BatchNorm conversion mode {mode!r}; '
                         f'accepted: {", ".join(BATCH_NORM_MODES)}')
    if is_batch_norm(model):
        raise ValueError(
            f'the model itself is a {type(model).__name__}; wrap it in a '
            'container (e.g. nn.Sequential) so it can be replaced in place')
    # remove_duplicate=False: a layer registered under two names is
    # replaced in both places by one shared replacement.
    targets = [(name, module) for name, module in model.named_modules(
        remove_duplicate=False) if is_batch_norm(module)]
    replaced: Dict[int, nn.Module] = {}
    names, regrouped, frozen = [], [], []
    for name, bn in targets:
        new = replaced.get(id(bn))
        if new is None:
            if (mode == 'group_norm' and name in affine_only
                    and getattr(bn, 'running_mean', None) is not None):
                new = FrozenBatchNorm.from_batch_norm(bn, trainable_affine)
                frozen.append(name)
            else:
                new = _replacement(name, bn, mode, num_groups,
                                   trainable_affine)
            replaced[id(bn)] = new
            if isinstance(new, nn.GroupNorm) and new.num_groups != num_groups:
                regrouped.append(f'{name} ({bn.num_features} channels): '
                                 f'{new.num_groups} groups')
        parent_name, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent_name), attr, new)
        names.append(name)
    return dict(count=len(replaced), names=names, regrouped=regrouped,
                affine_only=frozen)
