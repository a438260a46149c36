"""Which rule computes a layer's per-sample gradients, by kind and type."""
from typing import Callable, Dict, Optional, Type

from torch import nn

#: kind -> its :class:`~.capture.LayerCapture` subclass (one file each).
LAYER_RULES: Dict[str, Type] = {}
#: Trainable layer types the engine computes exactly, by *exact* type: a
#: subclass may change the forward (MMCV's ``ConvWS2d`` standardises its
#: weight, MMPretrain's ``LayerNorm2d`` permutes), so it is refused unless
#: registered itself (:func:`register_fast_layer`) with the kind of the
#: layer whose math its forward is.
FAST_LAYERS: Dict[type, str] = {
    nn.Linear: 'linear',
    nn.Conv1d: 'conv',
    nn.Conv2d: 'conv',
    nn.ConvTranspose2d: 'conv_transpose',
    nn.GroupNorm: 'group_norm',
    nn.LayerNorm: 'layer_norm',
}
#: The only parameter names a supported layer may own.
LAYER_PARAMS = {'weight', 'bias'}


def register_layer_rule(kind: str) -> Callable[[Type], Type]:
    """Class decorator: the rule of layers of ``kind``."""
    def register(cls: Type) -> Type:
        if kind in LAYER_RULES:
            raise ValueError(f'a fast-engine rule for {kind!r} exists')
        cls.kind = kind
        LAYER_RULES[kind] = cls
        return cls
    return register


def register_fast_layer(layer_type: type, kind: str) -> None:
    """Declare that ``layer_type``'s forward is exactly that of ``kind``
    (``'linear'``, ``'conv'``, ``'conv_transpose'``, ``'group_norm'``,
    ``'layer_norm'``, or ``'frozen_batch_norm'``: a per-channel affine map
    after a fixed normalisation exposed as ``normalise()``)."""
    if kind not in LAYER_RULES:
        raise ValueError(
            f'kind must be one of {sorted(LAYER_RULES)}, got {kind!r}')
    FAST_LAYERS[layer_type] = kind


def layer_kind(module: nn.Module) -> Optional[str]:
    kind = FAST_LAYERS.get(type(module))
    if kind is not None and not LAYER_RULES[kind].supports(module):
        return None
    return kind
