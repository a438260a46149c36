"""Checkpoints load without running code from the file (weights only).

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine
0.10.7 checkpoints hold a few objects beyond tensors (numpy arrays and
scalars in the dataset meta and message hub, MMEngine's ``HistoryBuffer``
with references to its statistics methods), so stock loading fails
(mmengine issue #1655). Unpickling anything else runs code, so this loader
keeps ``weights_only=True`` and allows exactly those objects:

* numpy: ``ndarray``, ``dtype``, scalars (``multiarray.scalar``) and the
  array rebuild function;
* ``mmengine.logging.HistoryBuffer``, whose pickled state names its
  statistics methods through ``getattr(HistoryBuffer, 'min')``: the
  ``getattr`` of such a file resolves to :func:`_history_buffer_method`,
  which returns only ``HistoryBuffer.min/max/mean/current`` and refuses any
  other attribute of any other object.

A checkpoint holding anything else is refused with a message naming what
it holds. The loader serves every local path MMEngine loads (``load_from``,
``--resume``, ``tools/test.py``) and this project's own tools.
"""
import os.path as osp
import pickle
from typing import List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from ..privacy import NotPrivateError

_HISTORY_BUFFER_METHODS = ('min', 'max', 'mean', 'current')


class UnsafeCheckpointError(NotPrivateError):
    """A checkpoint holds objects whose unpickling could run code."""


def _history_buffer_method(obj, name: str):
    """``getattr`` as a checkpoint may use it: HistoryBuffer's statistics
    methods, nothing else."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) '
        'is not allowed in a checkpoint')


def safe_globals() -> List:
    """What a checkpoint may name besides torch's own types."""
    multiarray = np.core.multiarray
    dtypes = {type(np.dtype(t)) for t in np.typecodes['All'] if t != 'O'}
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray,
            np.dtype, HistoryBuffer,
            (_history_buffer_method, 'builtins.getattr'),
            (_history_buffer_method, '__builtin__.getattr')] + sorted(
                dtypes, key=lambda t: t.__name__)


def load_checkpoint_file(filename: str, map_location=None):
    """``torch.load(filename, weights_only=True)`` with :func:`safe_globals`
    allowed; any other object is refused (:class:`UnsafeCheckpointError`)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    with torch.serialization.safe_globals(safe_globals()):
        try:
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
        except pickle.UnpicklingError as err:
            reason = str(err).strip().splitlines()
            found = next((line for line in reason
                          if 'GLOBAL' in line or 'not allowed' in line),
                         reason[0] if reason else '')
            raise UnsafeCheckpointError(
                f'refused to load {filename}: it holds an object outside '
                'the weights-only allowlist (tensors, numpy arrays and '
                f'scalars, MMEngine HistoryBuffer): {found.strip()}. '
                'Unpickling it could run code from the file. Load only '
                'checkpoints written by MMEngine/mmpose_dp, or convert this '
                'one where you trust it') from err


def register_checkpoint_loader() -> None:
    """Serve MMEngine's local-path checkpoint loading."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_checkpoint_file, force=True)


register_checkpoint_loader()
