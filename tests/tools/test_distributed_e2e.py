"""torchrun with 2 CPU processes (gloo) through tools/train.py reproduces a
single-process run on the same Poisson draws, and virtual steps reproduce one
large batch."""
import os
import subprocess
import sys

import pytest
import torch

from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file

from ..conftest import ROOT
from .test_train_test_e2e import _config, _ledger, _run

# Deterministic inputs: no random flips or box jitter, fixed init.
PIPELINE = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=(64, 64)),
    dict(type='GenerateTarget', encoder=dict(
        type='MSRAHeatmap', input_size=(64, 64), heatmap_size=(16, 16),
        sigma=1)),
    dict(type='PackPoseInputs')
]
NO_NOISE = {
    'privacy.target_epsilon': None,
    'privacy.noise_multiplier': 0.0,
    'privacy.max_grad_norm': 0.01,
    'randomness': dict(seed=0),
    'train_dataloader.dataset.pipeline': PIPELINE,
    'train_cfg.max_epochs': 1,
    'train_cfg.val_interval': 10,
    'env_cfg.dist_cfg': dict(backend='gloo'),
}


def _weights(path):
    state = load_checkpoint_file(path, map_location='cpu')
    return state['state_dict']


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6,
                              rtol=1e-4), k


@pytest.fixture(scope='module')
def single(tmp_path_factory, synthetic_mpii):
    tmp = tmp_path_factory.mktemp('single')
    cfg = _config(tmp, synthetic_mpii, **NO_NOISE)
    _run('tools/train.py', cfg, '--work-dir', str(tmp / 'w'))
    return cfg, tmp / 'w' / 'epoch_1.pth'


def test_two_processes_reproduce_one(single, tmp_path, synthetic_mpii):
    cfg, single_ckpt = single
    # The per-process expected batch halves so the global one stays 16.
    cfg2 = _config(tmp_path, synthetic_mpii, name='cfg2.py', **NO_NOISE,
                   **{'train_dataloader.batch_size': 8})
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--standalone', 'tools/train.py', cfg2,  # torchrun picks a port
         '--launcher', 'pytorch', '--work-dir', str(tmp_path / 'w')],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = tmp_path / 'w' / 'epoch_1.pth'
    lineages = [_ledger(c).pop('lineage') for c in (ckpt, single_ckpt)]
    assert lineages[0] != lineages[1]  # two runs, two ledgers
    assert {k: v for k, v in _ledger(ckpt).items() if k != 'lineage'} == {
        k: v for k, v in _ledger(single_ckpt).items()
        if k != 'lineage'}  # same q, same steps
    _assert_same_weights(_weights(ckpt), _weights(single_ckpt))


def test_virtual_steps_reproduce_one_large_batch(single, tmp_path):
    cfg, single_ckpt = single
    _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'),
         '--cfg-options', 'privacy.max_physical_batch_size=3')
    _assert_same_weights(_weights(tmp_path / 'w' / 'epoch_1.pth'),
                         _weights(single_ckpt))

