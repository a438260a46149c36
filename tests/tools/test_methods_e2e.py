"""PDP, FDP and the hybrid train through tools/train.py and evaluate through
tools/test.py on generated data."""
import json
import re

import pytest

from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file

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
    stages = {'pdp': 'method: DP-SGD + ProjectionStage;',
              'fdp': 'method: DP-SGD + PublicFeatureStage;',
              'hybrid': 'method: DP-SGD + ProjectionStage + '
                        'PublicFeatureStage;'}
    assert stages[method] in log
    ledger = _ledger(tmp_path / 'w' / 'epoch_1.pth')
    n_private = 64 - (16 if method != 'fdp' else 0)
    q = ledger['segments'][0][1]
    assert q == pytest.approx(16 / n_private)  # N_private excludes public
    assert ledger['steps'] == round(n_private / 16)
    if method != 'fdp':
        assert 'PDP subspace refreshed: k=16 of 16 public gradients (16 ' \
            'samples, 1 per gradient)' in log
    # What is protected and what is public: start and final log lines, the
    # checkpoint's plan, the privacy calculator.
    plan = load_checkpoint_file(tmp_path / 'w' / 'epoch_1.pth',
                                'cpu')['privacy_plan']
    labels = "every training record's keypoint labels, visibility and box"
    assert plan['labels_public'] == (method != 'pdp')
    assert (labels in plan['public']) == (method != 'pdp')
    assert log.count(labels) == (2 if method != 'pdp' else 0)
    if method != 'fdp':
        assert plan['public_set']['records'] >= 16
        assert 'whole images' in plan['public']
    calc = _run('tools/privacy_calculator.py', '--checkpoint',
                str(tmp_path / 'w' / 'epoch_1.pth')).stdout
    assert f"public: {plan['public']}" in calc
    assert f"protected: {plan['protected']}" in calc
    out = tmp_path / 'metrics.json'
    _run('tools/test.py', cfg, str(tmp_path / 'w' / 'epoch_1.pth'),
         '--work-dir', str(tmp_path / 't'), '--out', str(out))
    assert 'PCK' in json.loads(out.read_text())


def test_feature_dp_refuses_to_start_without_public_labels(tmp_path,
                                                          synthetic_mpii):
    cfg = _config(tmp_path, synthetic_mpii, config=f"{ROOT}/{CONFIGS['fdp']}",
                  **{'privacy.public_features.labels_are_public': False})
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'),
                check=False)
    assert proc.returncode != 0
    assert 'labels_are_public=True' in proc.stderr


def test_a_resume_with_another_public_set_is_refused(tmp_path,
                                                     synthetic_mpii):
    cfg = _config(tmp_path, synthetic_mpii, config=f"{ROOT}/{CONFIGS['pdp']}",
                  **PUBLIC, **{'train_cfg.max_epochs': 2})
    _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    other = _config(tmp_path, synthetic_mpii, name='other.py',
                    config=f"{ROOT}/{CONFIGS['pdp']}", **PUBLIC,
                    **{'train_cfg.max_epochs': 2,
                       'privacy.public_data.seed': 1})
    proc = _run('tools/train.py', other, '--work-dir', str(tmp_path / 'r'),
                '--resume', str(tmp_path / 'w' / 'epoch_1.pth'), check=False)
    assert proc.returncode != 0
    assert 'Resume with the same privacy.public_data' in proc.stderr
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'r'),
                '--resume', str(tmp_path / 'w' / 'epoch_1.pth'))
    # The first run went on to epoch 2 after epoch_1.pth: its write-ahead
    # journal counts those steps too, then the resumed epoch's.
    assert _ledger(tmp_path / 'r' / 'epoch_2.pth')['steps'] == 3 * round(
        48 / 16)


def test_the_papers_tinyvit_simcc_trains_and_evaluates(tmp_path,
                                                       synthetic_mpii):
    # Reduced input (128x96); windowed attention and attention biases make
    # the engine 'auto' end on 'vmap'.
    cfg = _config(tmp_path, synthetic_mpii,
                  config=f'{ROOT}/configs/synthetic/'
                  'dp_tinyvit_simcc_synthetic.py',
                  **{'train_dataloader.batch_size': 16,
                     'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1})
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    log = proc.stdout + proc.stderr
    assert 'clipping engine auto: ' in log and 'chose vmap' in log
    assert '27 layers frozen' in log
    # Last stage + norms + head (the head is smaller at 128x96 than the
    # 3.18 M-of-5.77 M of the MPII config).
    trainable = int(re.search(r'privacy.trainable: (\d+) parameters',
                              log).group(1))
    assert 2_000_000 < trainable < 3_200_000
    assert f'{trainable} trainable parameters clipped and noised' in log
    out = tmp_path / 'metrics.json'
    _run('tools/test.py', cfg, str(tmp_path / 'w' / 'epoch_1.pth'),
         '--work-dir', str(tmp_path / 't'), '--out', str(out))
    assert 0 <= json.loads(out.read_text())['PCK'] <= 100
