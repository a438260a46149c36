"""How a head's loss combines the per-sample losses of a batch.

Opacus rescales backprops by the batch size for a batch *mean*; getting it
wrong scales every per-sample gradient by B before clipping.
"""
from typing import Callable, Dict, Optional, Union

from torch import nn

from .validation import NotPrivateError

#: Losses whose batch loss is the mean (or sum) of per-sample losses that
#: each depend on one sample only, by class name; a callable decides from
#: the module's settings. Verified against micro-batched gradients in
#: tests/models/test_per_sample_gradients.py and test_model_families.py.
KNOWN_LOSS_REDUCTIONS: Dict[str, Union[str, Callable[[nn.Module], str]]] = {
    'KeypointMSELoss': 'mean',  # mean over B * K * H * W
    # per joint, means over B * H * W of heatmap and offset errors (UDP)
    'CombinedTargetMSELoss': 'mean',
    'KLDiscretLoss': 'sum',  # sum over the batch / K
    'SmoothL1Loss': 'mean',  # mean over B * K * 2
    # loss / len(loss) = / B with size_average, else a plain sum
    'RLELoss': lambda loss: 'mean' if loss.size_average else 'sum',
    # per-sample top-k over keypoints, then a mean over the batch (MSPN/RSN)
    'KeypointOHKMMSELoss': 'mean',
    # elementwise BCE (x target weight), then a mean over B * K or a sum;
    # reduction='none' leaves the batch reduction to whoever reads it
    'BCELoss': lambda loss: {'mean': 'mean', 'sum': 'sum'}.get(
        loss.reduction),
}
#: Losses that combine samples before their per-sample terms are formed;
#: refused whatever the config declares.
CROSS_SAMPLE_LOSSES = {
    'BoneLoss': 'compares the batch means of predicted and target bone '
                'lengths',
}
#: Modules that only hold loss modules (checked one by one).
LOSS_CONTAINERS = ('ModuleList', 'ModuleDict', 'Sequential', 'CombinedLoss',
                   'MultipleLossWrapper')


def _is_loss(name: str, module: nn.Module) -> bool:
    """A loss module: a known one, one of MMPose's losses, or a registered
    module under a ``loss*`` name (``head.loss_module``, inside a
    ``ModuleList``/``ModuleDict`` too)."""
    from mmpose.registry import MODELS
    cls = type(module).__name__
    if cls in KNOWN_LOSS_REDUCTIONS or cls in CROSS_SAMPLE_LOSSES:
        return True
    if type(module).__module__.startswith('mmpose.models.losses'):
        return True
    return (any(part.startswith('loss') for part in name.split('.'))
            and MODELS.get(cls) is type(module))


#: Heads whose named children are heads called through ``forward`` only
#: (as feature layers), so the losses those children build are never
#: computed: SimCCHead's deconvolution head (``deconv_head(feats)``; only
#: ``SimCCHead.loss_module`` is called in ``SimCCHead.loss``).
FEATURE_ONLY_CHILDREN = {'SimCCHead': ('deconv_head', )}


def _feature_only(model: nn.Module):
    return [f'{name}.{child}' if name else child
            for name, module in model.named_modules()
            for child in FEATURE_ONLY_CHILDREN.get(type(module).__name__, ())
            if getattr(module, child, None) is not None]


def loss_modules(model: nn.Module):
    """``(name, module)`` of every loss module of ``model``, containers
    looked into, a loss's own submodules (RLE's flow) and the never-called
    losses of feature-only heads (:data:`FEATURE_ONLY_CHILDREN`) not."""
    inside = _feature_only(model)
    for name, module in model.named_modules():
        if any(name.startswith(p + '.') for p in inside):
            continue
        if type(module).__name__ in LOSS_CONTAINERS or not _is_loss(
                name, module):
            continue
        inside.append(name)
        yield name, module


def detect_loss_reduction(model: nn.Module,
                          declared: Optional[str] = None) -> str:
    """The loss reduction of every loss module in ``model``.

    Args:
        model: the pose estimator.
        declared: ``'mean'`` or ``'sum'`` declared in the config for a loss
            this table does not know; it must not contradict the table.

    Raises:
        NotPrivateError: no loss found, mixed reductions, or an unknown loss
            without a declaration.
    """
    found = {}
    for name, module in loss_modules(model):
        cls = type(module).__name__
        if cls in CROSS_SAMPLE_LOSSES:
            raise NotPrivateError(
                f'{cls} (at {name}) {CROSS_SAMPLE_LOSSES[cls]}: each '
                "sample's gradient depends on the others, so no per-sample "
                'clipping bounds its sensitivity. Remove it from the loss '
                'for private training')
        known = KNOWN_LOSS_REDUCTIONS.get(cls)
        known = known(module) if callable(known) else known
        if known is not None:
            found[name] = known
        else:
            if declared is None:
                raise NotPrivateError(
                    f'cannot tell how {cls} (at {name}) reduces over the '
                    'batch, so per-sample gradients cannot be trusted. If '
                    'each sample\'s loss depends on that sample only, set '
                    "privacy=dict(loss_reduction='mean') (batch mean) or "
                    "'sum' (batch sum) in the config.")
            found[name] = declared
    if declared is not None:
        for name, reduction in found.items():
            if reduction != declared:
                raise NotPrivateError(
                    f'privacy.loss_reduction={declared!r} contradicts '
                    f'{name}, a known {reduction!r}-reduced loss')
    reductions = set(found.values())
    if not reductions:
        if declared is None:
            raise NotPrivateError(
                'no loss module found in the model; set '
                "privacy=dict(loss_reduction='mean' or 'sum')")
        return declared
    if len(reductions) > 1:
        raise NotPrivateError(
            f'losses reduce differently over the batch: {found}; the '
            'per-sample gradients need one reduction')
    return reductions.pop()
