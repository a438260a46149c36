"""Partial fine-tuning: which parameters a private run trains.

Frozen parameters get no gradient at all: they are excluded from clipping
and noise (the noise dimension is the number of trainable parameters), get
no per-sample machinery, and the backward pass stops at the earliest layer
that has a trainable parameter.
"""
import re
from typing import Dict, List, Sequence, Union

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .batch_norm import FrozenBatchNorm

#: Normalisation layers for ``norm_layers=True``.
NORM_LAYERS = (nn.GroupNorm, nn.LayerNorm, _NormBase, FrozenBatchNorm)


def _is_norm_layer(module: nn.Module) -> bool:
    # MMCV/MMPose/MMPretrain norms (ScaleNorm, LayerNorm2d, ...) by name.
    return (isinstance(module, NORM_LAYERS)
            or 'Norm' in type(module).__name__)


def select_trainable(model: nn.Module,
                     trainable: Union[Sequence[str], Dict]) -> Dict:
    """Freeze every parameter of ``model`` that ``trainable`` does not name.

    Args:
        model: the model, before its optimizer is built.
        trainable: a list of regular expressions searched in parameter
            names (``r'^head\\.'``, ``r'^backbone\\.stage4\\.'``), or
            ``dict(params=[...], norm_layers=True)`` to also train the
            parameters of every normalisation layer (the paper's recipe:
            last stage + norm layers + head). Parameters already frozen by
            the model (e.g. ``frozen_stages``) stay frozen.

    Returns:
        ``dict(trainable=n, frozen=m, trainable_tensors=k, patterns=[...])``
        counts of parameters (elements) after selection.

    Raises:
        ValueError: an invalid pattern, or one that matches no parameter.
    """
    if isinstance(trainable, dict):
        unknown = set(trainable) - {'params', 'norm_layers'}
        if unknown:
            raise ValueError(f'unknown privacy.trainable keys {sorted(unknown)}'
                             "; known: ['norm_layers', 'params']")
        patterns = list(trainable.get('params', ()))
        norm_layers = bool(trainable.get('norm_layers', False))
    else:
        patterns, norm_layers = list(trainable), False
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as err:
        raise ValueError(f'privacy.trainable: bad pattern ({err})') from err
    norm_params = set()
    if norm_layers:
        for module in model.modules():
            if _is_norm_layer(module):
                norm_params.update(
                    id(p) for p in module.parameters(recurse=False))
    used = [False] * len(compiled)
    counts = dict(trainable=0, frozen=0, trainable_tensors=0)
    for name, param in model.named_parameters():
        hits = [i for i, c in enumerate(compiled) if c.search(name)]
        for i in hits:
            used[i] = True
        keep = param.requires_grad and (bool(hits) or id(param) in norm_params)
        param.requires_grad_(keep)
        counts['trainable' if keep else 'frozen'] += param.numel()
        counts['trainable_tensors'] += int(keep)
    unused = [p for p, u in zip(patterns, used) if not u]
    if unused:
        raise ValueError(
            f'privacy.trainable patterns {unused} match no parameter name; '
            'names look like ' +
            ', '.join(n for n, _ in list(model.named_parameters())[:3]))
    if counts['trainable'] == 0:
        raise ValueError('privacy.trainable leaves no trainable parameter')
    return dict(counts, patterns=patterns, norm_layers=norm_layers)


def trainable_names(model: nn.Module) -> List[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]
