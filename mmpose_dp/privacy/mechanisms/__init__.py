"""Privacy mechanisms, by name: what a step samples, what noise it adds, how
its steps are accounted and how sigma is planned, one file a mechanism.

``privacy.mechanism`` selects one (``'gaussian'``, DP-SGD, by default);
the PrivacyHook hands it to the sampler (batches), the DP optim wrapper
(noise) and the ledger (accounting, planning). See docs/mechanisms.md.
"""
from typing import Dict, Type, Union

from .banded_mf import BandedMF
from .banded_noise import (CorrelatedNoise, banded_sqrt_coefficients,
                           strategy_matrix)
from .base import Mechanism
from .gaussian import GaussianMechanism

MECHANISMS: Dict[str, Type[Mechanism]] = {}


def register_mechanism(cls: Type[Mechanism]) -> Type[Mechanism]:
    """Register ``cls`` under ``cls.name`` (a new mechanism is one file
    plus this call)."""
    if not cls.name or cls.name in MECHANISMS:
        raise ValueError(f'mechanism name {cls.name!r} is empty or taken')
    MECHANISMS[cls.name] = cls
    return cls


register_mechanism(GaussianMechanism)
register_mechanism(BandedMF)


def build_mechanism(cfg: Union[None, str, Dict] = None) -> Mechanism:
    """``None`` or ``'gaussian'`` (DP-SGD), or ``dict(type=name, **args)``."""
    cfg = dict(type='gaussian') if cfg is None else (
        dict(type=cfg) if isinstance(cfg, str) else dict(cfg))
    name = cfg.pop('type', None)
    if name not in MECHANISMS:
        raise ValueError(f'unknown privacy.mechanism {name!r}; known: '
                         f'{sorted(MECHANISMS)}')
    return MECHANISMS[name](**cfg)


__all__ = ['BandedMF', 'CorrelatedNoise', 'GaussianMechanism', 'MECHANISMS',
           'Mechanism', 'banded_sqrt_coefficients', 'build_mechanism',
           'register_mechanism', 'strategy_matrix']
