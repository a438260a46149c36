"""FrozenBatchNorm: a BatchNorm layer with fixed statistics, and its exact
per-sample gradients (an Opacus grad sampler and a fast-engine rule)."""
from typing import Dict, List

import torch
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler
from torch import nn

from ..privacy.engines.fast import register_fast_layer


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
