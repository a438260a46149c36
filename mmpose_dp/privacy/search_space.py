"""The search space of a private hyperparameter search.

A space maps config keys (``--cfg-options`` spelling) to distributions::

    space = {
        'optim_wrapper.optimizer.lr': dict(type='log_uniform', low=1e-4,
                                           high=1e-2),
        'privacy.max_grad_norm': dict(type='choice', values=[0.01, 0.1, 1]),
    }

Repeat-and-select needs every trial to have the same privacy curve, so
only keys that cannot change sigma, q, the steps, the mechanism, delta or
the privacy unit are accepted (:data:`ALLOWED`); the search tool also
checks each trial's ledger against the plan.
"""
import math
from typing import Any, Dict

import numpy as np

from .errors import NotPrivateError

#: Prefixes a space may draw (optimizer, schedule, model, clipping norm,
#: engine, BatchNorm handling, trained parameters, PDP / FDP settings).
ALLOWED = ('optim_wrapper.', 'param_scheduler', 'model.', 'randomness.',
           'privacy.max_grad_norm', 'privacy.engine',
           'privacy.max_physical_batch_size', 'privacy.physical_batch_size',
           'privacy.cuda_graphs',
           'privacy.batch_norm',
           'privacy.trainable', 'privacy.projection.',
           'privacy.public_features.')
#: Why some keys are refused (the first matching prefix is named).
REFUSED = {
    'train_dataloader': 'the batch size sets q and the data set N',
    'train_cfg': 'the epochs set the steps',
    'privacy.target_epsilon': 'it sets sigma',
    'privacy.noise_multiplier': 'it is sigma',
    'privacy.delta': 'it is delta',
    'privacy.unit': 'it is the privacy unit',
    'privacy.mechanism': 'it is the mechanism',
    'privacy.public_data': 'the public set is part of the statement',
    'privacy.log_private_metrics': 'it writes private metrics',
    'load_from': 'a trial may not start from another private model',
    'resume': 'a trial may not start from another private model',
}
DISTRIBUTION_TYPES = ('choice', 'uniform', 'log_uniform', 'int_uniform')


def check_space(space: Dict[str, Dict]) -> Dict[str, Dict]:
    """``space`` itself if every key and distribution is acceptable."""
    if not isinstance(space, dict) or not space:
        raise ValueError('the search space is a non-empty dict of '
                         'config key -> distribution')
    for key, dist in space.items():
        why = next((w for p, w in REFUSED.items() if key.startswith(p)),
                   None)
        if why is not None or not key.startswith(ALLOWED):
            raise NotPrivateError(
                f'the search space may not draw {key!r}'
                + (f' ({why})' if why else '') + ': every trial must have '
                'the same privacy curve. Draw keys under '
                f'{", ".join(ALLOWED)}')
        if '[' in key:
            raise ValueError(f'{key!r}: list indices are not supported')
        _check_distribution(key, dist)
    return space


def _check_distribution(key: str, dist: Dict) -> None:
    kind = dist.get('type') if isinstance(dist, dict) else None
    if kind not in DISTRIBUTION_TYPES:
        raise ValueError(f'{key!r}: a distribution is dict(type=...) with '
                         f'type in {DISTRIBUTION_TYPES}, got {dist!r}')
    if kind == 'choice':
        if not dist.get('values'):
            raise ValueError(f'{key!r}: choice needs a non-empty values')
        return
    low, high = dist.get('low'), dist.get('high')
    if low is None or high is None or not low <= high:
        raise ValueError(f'{key!r}: {kind} needs low <= high')
    if kind == 'log_uniform' and low <= 0:
        raise ValueError(f'{key!r}: log_uniform needs low > 0')


def draw(space: Dict[str, Dict], rng: np.random.Generator) -> Dict[str, Any]:
    """One trial's hyperparameters, keys in the space's order."""
    values = {}
    for key, dist in space.items():
        kind = dist['type']
        if kind == 'choice':
            choice = dist['values'][int(rng.integers(len(dist['values'])))]
            values[key] = choice.item() if hasattr(choice, 'item') else choice
        elif kind == 'uniform':
            values[key] = float(rng.uniform(dist['low'], dist['high']))
        elif kind == 'log_uniform':
            values[key] = float(math.exp(rng.uniform(
                math.log(dist['low']), math.log(dist['high']))))
        else:
            values[key] = int(rng.integers(dist['low'], dist['high'] + 1))
    return values


def nested(values: Dict[str, Any]) -> Dict[str, Dict]:
    """Dotted keys as the nested dicts a config file merges."""
    tree: Dict[str, Any] = {}
    for key, value in values.items():
        node = tree
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f'{key!r} conflicts with another key')
        node[parts[-1]] = value
    return tree
