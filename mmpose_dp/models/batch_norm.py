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
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..privacy.engines.fast import register_fast_layer

BATCH_NORM_MODES = ('freeze', 'group_norm')


class FrozenBatchNorm(nn.Module):
    """BatchNorm that always normalises with the statistics it holds.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per
    channel (dimension 1), whatever ``self.training`` is: ``model.train()``
    or MMPose's ``norm_eval`` can never switch it to batch statistics, so it
    neither mixes the samples of a batch nor updates its buffers. It stays a
    per-sample map in train mode, which is why
    :func:`mmpose_dp.models.validation.cross_sample_modules` accepts it, and
    Opacus hooks (which only capture activations of modules in train mode)
    still see it.

    Parameter and buffer names are those of ``torch.nn.BatchNorm*d`` (and
    MMCV's ``SyncBatchNorm``): ``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``; state dicts load strictly in
    both directions. Only ``load_state_dict`` (or explicit assignment) can
    change the statistics.

    Args:
        num_features: number of channels ``C`` of an ``(N, C, ...)`` input.
        eps: added to the variance, as in BatchNorm.
        affine: whether it has ``weight`` and ``bias``.
        trainable_affine: whether ``weight`` and ``bias`` require grad.
    """

    _version = 2  # torch BatchNorm's state-dict version (num_batches_tracked)
    updates_statistics = False
    uses_batch_statistics = False

    def __init__(self, num_features: int, eps: float = 1e-5,
                 affine: bool = True, trainable_affine: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features),
                                       requires_grad=trainable_affine)
            self.bias = nn.Parameter(torch.zeros(num_features),
                                     requires_grad=trainable_affine)
        else:
            self.register_parameter('weight', None)
            self.register_parameter('bias', None)
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        self.register_buffer('num_batches_tracked',
                             torch.tensor(0, dtype=torch.long))

    @classmethod
    def from_batch_norm(cls, bn: nn.Module,
                        trainable_affine: bool = True) -> 'FrozenBatchNorm':
        """A copy of ``bn``'s affine parameters, statistics and ``eps``, on
        its device and dtype; ``bn`` is left untouched."""
        frozen = cls(bn.num_features, eps=bn.eps, affine=bn.affine,
                     trainable_affine=trainable_affine)
        with torch.no_grad():
            if bn.affine:
                frozen.weight = nn.Parameter(bn.weight.detach().clone(),
                                             requires_grad=trainable_affine)
                frozen.bias = nn.Parameter(bn.bias.detach().clone(),
                                           requires_grad=trainable_affine)
            frozen.running_mean = bn.running_mean.detach().clone()
            frozen.running_var = bn.running_var.detach().clone()
            if getattr(bn, 'num_batches_tracked', None) is not None:
                frozen.num_batches_tracked = (
                    bn.num_batches_tracked.detach().clone())
            else:
                frozen.num_batches_tracked = frozen.num_batches_tracked.to(
                    bn.running_mean.device)
        return frozen

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - running_mean) / sqrt(running_var + eps)``, no affine."""
        return F.batch_norm(x, self.running_mean, self.running_var, None,
                            None, False, 0.0, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f'{type(self).__name__}({self.num_features}) expects an input '
                f'of shape (N, {self.num_features}, ...), got '
                f'{tuple(x.shape)}')
        # training=False: running statistics are read, never written.
        return F.batch_norm(x, self.running_mean, self.running_var,
                            self.weight, self.bias, False, 0.0, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # As torch's BatchNorm: checkpoints older than version 2 have no
        # num_batches_tracked; it is informative only here.
        version = local_metadata.get('version', None)
        key = prefix + 'num_batches_tracked'
        if (version is None or version < 2) and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.num_batches_tracked)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        trainable = self.affine and self.weight.requires_grad
        return (f'{self.num_features}, eps={self.eps}, affine={self.affine}, '
                f'trainable_affine={trainable}, statistics=frozen')


register_fast_layer(FrozenBatchNorm, 'frozen_batch_norm')


@register_grad_sampler(FrozenBatchNorm)
def frozen_batch_norm_grad_sample(
        layer: FrozenBatchNorm, activations: List[torch.Tensor],
        backprops: torch.Tensor) -> Dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of the affine map ``x_hat * weight + bias``.

    ``activations[0]`` is the layer input ``(N, C, ...)``; ``backprops`` is
    the gradient of the loss w.r.t. the output, already multiplied by ``N``
    by Opacus when ``loss_reduction='mean'``. Because the statistics are
    constants, sample ``n``'s gradient involves only sample ``n``:
    ``sum(backprops[n] * x_hat[n])`` and ``sum(backprops[n])`` over every
    dimension except the channel.
    """
    ret = {}
    if layer.weight is not None and layer.weight.requires_grad:
        x_hat = layer.normalise(activations[0])
        ret[layer.weight] = torch.einsum('nc...->nc', x_hat * backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = torch.einsum('nc...->nc', backprops)
    return ret


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
