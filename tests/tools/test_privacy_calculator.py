import json

import pytest
import torch

from mmpose_dp.privacy.errors import NotPrivateError
from mmpose_dp.privacy.ledger import PrivacyLedger
from privacy_calculator import main


def test_golden_values(capsys):
    result = main(['--noise-multiplier', '1.5', '--sample-rate', '0.04',
                   '--steps', '2250', '--delta', '1e-5', '--json'])
    printed = json.loads(capsys.readouterr().out)
    assert printed['epsilon'] == result['epsilon']
    assert printed['epsilon_rdp'] == pytest.approx(7.33, abs=0.005)
    assert 6.7688 <= printed['epsilon'] <= 6.78 * 1.02
    for key in ('epsilon', 'epsilon_rdp', 'noise_multiplier', 'sample_rate',
                'steps', 'delta'):
        assert key in printed


def test_target_epsilon_gives_a_calibrated_sigma(capsys):
    result = main(['--target-epsilon', '1.0', '--dataset-size', '1000',
                   '--batch-size', '10', '--epochs', '5', '--json'])
    assert result['steps'] == 500 and result['sample_rate'] == 0.01
    assert result['delta'] == pytest.approx(1e-4)
    assert result['epsilon'] <= 1.0
    assert result['noise_multiplier'] > 0


def test_reads_a_checkpoint_ledger(tmp_path, capsys):
    ckpt = tmp_path / 'c.pth'
    ledger = PrivacyLedger(1e-5)
    for _ in range(2250):
        ledger.step(1.5, 0.04)
    torch.save({'privacy_ledger': ledger.state_dict()}, ckpt)
    result = main(['--checkpoint', str(ckpt)])
    assert result['steps'] == 2250
    assert result['epsilon_rdp'] == pytest.approx(7.33, abs=0.005)
    assert 'epsilon=' in capsys.readouterr().out


def test_a_ledger_of_another_mechanism_is_refused(tmp_path):
    ckpt = tmp_path / 'c.pth'
    torch.save({'privacy_ledger': dict(delta=1e-5, steps=2250,
                                       segments=[[1.5, 0.04, 2250]])}, ckpt)
    with pytest.raises(NotPrivateError, match='poisson_subsampled_gaussian'):
        main(['--checkpoint', str(ckpt)])


def test_delta_at_least_one_over_n_is_refused():
    with pytest.raises(SystemExit, match='no privacy'):
        main(['--noise-multiplier', '1', '--dataset-size', '100',
              '--batch-size', '10', '--epochs', '1', '--delta', '0.05'])
