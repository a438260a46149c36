"""Clipping engines, chosen by name with ``privacy.engine``.

``fast``: per-layer norms (mixed ghost / instantiate) and book-keeping in one
backward; ``hooks``: Opacus hooks; ``vmap``: ``torch.func`` per-sample
calls, exact for any model whose forward torch.func can trace; ``auto``: the
fastest one that is exact for the model.
"""
from .auto import AutoEngine
from .base import BatchLoss, ClippingEngine, TensorBatchLoss, clip_units
from .fast import FastEngine
from .hooks import HooksEngine
from .vmap import VmapEngine

#: name -> engine class; ``auto`` tries these in order.
ENGINES = {e.name: e for e in (FastEngine, HooksEngine, VmapEngine)}
AUTO_ORDER = ('fast', 'hooks', 'vmap')


def build_engine(name: str, model, batch_loss: BatchLoss,
                 loss_reduction: str, **kwargs) -> ClippingEngine:
    """The engine ``name`` (``'auto'``, ``'hooks'``, ``'vmap'``) for
    ``model``."""
    if name == 'auto':
        return AutoEngine(model, batch_loss, loss_reduction,
                          [ENGINES[n] for n in AUTO_ORDER])
    if name not in ENGINES:
        raise ValueError(f'privacy.engine must be one of '
                         f"{['auto'] + sorted(ENGINES)}, got {name!r}")
    return ENGINES[name](model, batch_loss, loss_reduction, **kwargs)


__all__ = ['AutoEngine', 'BatchLoss', 'ClippingEngine', 'TensorBatchLoss',
           'clip_units', 'FastEngine', 'HooksEngine', 'VmapEngine', 'ENGINES',
           'AUTO_ORDER', 'build_engine']
