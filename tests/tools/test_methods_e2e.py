"""PDP, FDP and the hybrid train through tools/train.py and evaluate through
tools/test.py on generated data."""
import json

import pytest
import torch

from ..conftest import ROOT
from .test_train_test_e2e import _config, _ledger, _run

CONFIGS = {
    'pdp': 'configs/synthetic/pdp_tiny_hrnet_synthetic.py',
    'fdp': 'configs/synthetic/fdp_tiny_hrnet_synthetic.py',
    'hybrid': 'configs/synthetic/hybrid_tiny_hrnet_synthetic.py',
}
PUBLIC = {'privacy.public_data.num_samples': 16,
          'privacy.projection.rank': 16, 'privacy.projection.interval': 3}


@pytest.mark.parametrize('method', sorted(CONFIGS))
def test_method_trains_and_evaluates(method, tmp_path, synthetic_mpii):
    options = {'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1}
    if method != 'fdp':
        options.update(PUBLIC)
    cfg = _config(tmp_path, synthetic_mpii, config=f'{ROOT}/{CONFIGS[method]}',
                  **options)
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    log = proc.stdout + proc.stderr
    stages = {'pdp': 'DP-SGD + ProjectionStage\n',
              'fdp': 'DP-SGD + PublicFeatureStage\n',
              'hybrid': 'DP-SGD + ProjectionStage + PublicFeatureStage\n'}
    assert stages[method] in log
    ledger = _ledger(tmp_path / 'w' / 'epoch_1.pth')
    n_private = 64 - (16 if method != 'fdp' else 0)
    q = ledger['segments'][0][1]
    assert q == pytest.approx(16 / n_private)  # N_private excludes public
    assert ledger['steps'] == round(n_private / 16)
    if method != 'fdp':
        assert 'PDP subspace refreshed: k=16 of 16 public samples' in log
    out = tmp_path / 'metrics.json'
    _run('tools/test.py', cfg, str(tmp_path / 'w' / 'epoch_1.pth'),
         '--work-dir', str(tmp_path / 't'), '--out', str(out))
    assert 'PCK' in json.loads(out.read_text())
