"""tools/audit_privacy.py: the correct mechanism's audited lower bound stays
below the claimed epsilon, and every broken mechanism is caught."""
import json

from ..conftest import ROOT
from .test_train_test_e2e import _run


def test_audit_passes_the_mechanism_and_catches_broken_ones(
        tmp_path, synthetic_mpii):
    data = synthetic_mpii + '/'
    proc = _run(
        'tools/audit_privacy.py',
        f'{ROOT}/configs/synthetic/dp_tiny_hrnet_synthetic.py',
        '--canaries', '1000', '--out', str(tmp_path), '--self-check',
        '--json', '--cfg-options', f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.headbox_file={data}annotations/'
        'mpii_gt_val.mat', f'test_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.headbox_file={data}annotations/'
        'mpii_gt_val.mat', 'train_dataloader.batch_size=16',
        'train_cfg.max_epochs=8', 'train_cfg.val_interval=100',
        'privacy.target_epsilon=1.0', 'privacy.delta=1e-6')
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ('claimed_epsilon', 'epsilon_lower_bound', 'confidence',
                'canaries', 'guesses', 'correct', 'self_check'):
        assert key in result
    assert 0.9 < result['claimed_epsilon'] <= 1.0
    assert result['confidence'] == 0.95 and result['canaries'] == 1000
    assert 0 <= result['epsilon_lower_bound'] <= result['claimed_epsilon']
    assert 0 < result['correct'] <= result['guesses']
    checks = {r['mechanism']: r for r in result['self_check']}
    assert set(checks) == {'no-noise', 'noise-divided-by-processes',
                           'canaries-unclipped'}
    for r in checks.values():
        assert r['caught'] and r['epsilon_lower_bound'] > \
            r['claimed_epsilon'], r
    assert (tmp_path / 'canary_scores.png').stat().st_size > 0
    saved = json.loads((tmp_path / 'audit.json').read_text())
    assert saved['epsilon_lower_bound'] == result['epsilon_lower_bound']
