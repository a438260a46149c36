"""Loading a checkpoint never runs code from the file (weights only, with
an allowlist of what MMEngine checkpoints hold)."""
import os

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

import mmpose_dp  # noqa: F401  (registers the loader)
from mmpose_dp.engine.checkpoint_loading import (UnsafeCheckpointError,
                                                 load_checkpoint_file)


class _WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


class _ReachesNdarrayTofile:
    """``getattr(numpy.ndarray, 'tofile')`` from the pickle: with getattr
    allowed outright, a file could be written by calling it."""

    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


def _crafted(tmp_path, payload):
    path = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=dict(w=torch.zeros(2)), meta=dict(x=payload)),
               path)
    return path


def test_a_checkpoint_that_runs_code_on_load_is_refused(tmp_path):
    marker = tmp_path / 'written_on_load'
    path = _crafted(tmp_path, _WritesAFile(marker))
    for load in (load_checkpoint_file,
                 lambda p: CheckpointLoader.load_checkpoint(p, 'cpu')):
        with pytest.raises(UnsafeCheckpointError, match='allowlist'):
            load(path)
    assert not marker.exists()


def test_getattr_reaches_only_the_history_buffer_statistics(tmp_path):
    path = _crafted(tmp_path, _ReachesNdarrayTofile())
    with pytest.raises(UnsafeCheckpointError, match='tofile'):
        load_checkpoint_file(path)


def test_what_mmengine_checkpoints_hold_loads(tmp_path):
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(0.5)
    path = str(tmp_path / 'ok.pth')
    torch.save(dict(state_dict=dict(w=torch.ones(2)),
                    meta=dict(dataset_meta=dict(
                        sigmas=np.ones(3, dtype=np.float32),
                        colors=np.zeros((2, 3), dtype=np.uint8),
                        flip=[1, 0]), seed=np.int64(3)),
                    message_hub=dict(log_scalars={'train/lr': buffer})),
               path)
    loaded = load_checkpoint_file(path)
    assert loaded['message_hub']['log_scalars']['train/lr'].mean() == 0.5
    assert loaded['meta']['dataset_meta']['sigmas'].dtype == np.float32
    assert loaded['meta']['seed'] == 3


def test_the_privacy_calculator_refuses_a_crafted_checkpoint(tmp_path):
    import privacy_calculator
    marker = tmp_path / 'written_on_load'
    path = _crafted(tmp_path, _WritesAFile(marker))
    with pytest.raises(UnsafeCheckpointError):
        privacy_calculator.main(['--checkpoint', path])
    assert not marker.exists()
