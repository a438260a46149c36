"""BandMF through tools/train.py: a fresh run keeps its secret keys outside
the work dir, a --resume continues with them (or is refused without them),
and the checkpoint's ledger and the privacy calculator account for rounds
at the group rate."""
import json
import math
import os

import pytest

from mmpose_dp.privacy import PrivacyLedger, epsilon_prv

from .test_train_test_e2e import _config, _ledger, _run

BANDED = dict(type='banded_mf', bands=2)


def _banded_config(tmp_path, data, secrets, name='cfg.py', epochs=1):
    return _config(tmp_path, data, name=name, **{
        'privacy.mechanism': BANDED, 'privacy.secret_dir': str(secrets),
        # one sigma for both parts of the run, well within the budget
        'privacy.noise_multiplier': 1.0, 'privacy.target_epsilon': 100.0,
        'train_cfg.max_epochs': epochs,
        # secret keys, as in production (fixed ones are never kept)
        'privacy.noise_seed': None, 'privacy.sampler_seed': None})


def test_a_banded_run_resumes_with_its_kept_keys(tmp_path, synthetic_mpii):
    secrets = tmp_path / 'secrets'
    cfg = _banded_config(tmp_path, synthetic_mpii, secrets)
    first = tmp_path / 'first'  # one epoch: 4 steps
    proc = _run('tools/train.py', cfg, '--work-dir', str(first))
    log = proc.stdout + proc.stderr
    assert 'method: BandedMF(bands=2)' in log
    state = _ledger(first / 'epoch_1.pth')
    assert state['privacy_mechanism'] == dict(BANDED, version=1)
    kept = secrets / f"{state['lineage']}.json"
    assert kept.is_file() and oct(os.stat(kept).st_mode & 0o777) == '0o600'
    # Nothing of the keys in the work dir.
    keys = json.loads(kept.read_text())
    for root, _, files in os.walk(first):
        for name in files:
            data = open(os.path.join(root, name), 'rb').read()
            assert all(v.encode() not in data for v in keys.values()), name

    # Resume for a second epoch in a new work dir (the first run's journal
    # sits beside its checkpoint).
    second = tmp_path / 'second'
    longer = _banded_config(tmp_path, synthetic_mpii, secrets, 'longer.py',
                            epochs=2)
    proc = _run('tools/train.py', longer, '--work-dir', str(second),
                '--resume', str(first / 'epoch_1.pth'))
    log = proc.stdout + proc.stderr
    assert 'continues with the secret keys it kept in' in log
    resumed = _ledger(second / 'epoch_2.pth')
    assert resumed['steps'] == 4 + 4
    ledger = PrivacyLedger.from_state_dict(resumed)
    (sigma, q, steps), = resumed['segments']
    assert ledger.epsilon() == pytest.approx(epsilon_prv(
        [(sigma, 2 * q, math.ceil(steps / 2))], ledger.delta), rel=1e-6)
    calc = _run('tools/privacy_calculator.py', '--checkpoint',
                str(second / 'epoch_2.pth'), '--json').stdout
    result = json.loads(calc.strip().splitlines()[-1])
    assert result['mechanism'] == 'BandedMF(bands=2)'
    assert result['epsilon'] == pytest.approx(ledger.epsilon(), rel=1e-3)

    # Without the kept keys the correlated stream cannot go on: refused.
    other = _banded_config(tmp_path, synthetic_mpii, tmp_path / 'elsewhere',
                           name='other.py', epochs=2)
    proc = _run('tools/train.py', other, '--work-dir', str(tmp_path / 'x'),
                '--resume', str(first / 'epoch_1.pth'), check=False)
    assert proc.returncode != 0
    assert 'secret keys' in proc.stdout + proc.stderr
