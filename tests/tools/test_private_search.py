"""A private search end to end on the tiny synthetic config: mean 3 trials,
interrupted after the first trial and resumed, one model released."""
import json
import os
import os.path as osp
import stat

import numpy as np
import pytest
import torch

import private_search
from mmpose_dp.privacy import derived_seed
from mmpose_dp.privacy.search_accounting import TrialCount, search_epsilon
from tests.conftest import TINY_CONFIG

SPACE = """space = {
    'optim_wrapper.optimizer.lr': dict(type='log_uniform', low=1e-4,
                                       high=1e-2),
    'privacy.max_grad_norm': dict(type='choice', values=[0.05, 0.5]),
}
"""


def write_inputs(tmp_path, data_root, public_validation=True):
    root = data_root.rstrip('/') + '/'
    config = tmp_path / 'search_base.py'
    config.write_text(
        f"_base_ = [{TINY_CONFIG!r}]\n"
        f"public_validation = {public_validation}\n"
        f"train_dataloader = dict(batch_size=16, dataset=dict("
        f"data_root={root!r}))\n"
        "train_cfg = dict(max_epochs=1, val_interval=2)\n"
        "default_hooks = dict(checkpoint=dict(interval=1))\n"
        f"val_dataloader = dict(dataset=dict(data_root={root!r}, "
        f"headbox_file={root + 'annotations/mpii_gt_val.mat'!r}))\n"
        "test_dataloader = val_dataloader\n"
        "visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])\n")
    space = tmp_path / 'space.py'
    space.write_text(SPACE)
    return str(config), str(space)


def seed_with_trials(wanted):
    """A test seed whose K (geometric, mean 3) is in ``wanted``."""
    trials = TrialCount('geometric', 3)
    return next(s for s in range(1000) if trials.draw(
        np.random.default_rng(derived_seed(s, 0))) in wanted)


def test_search_releases_the_best_trial_and_resumes(tmp_path, synthetic_mpii,
                                                    monkeypatch):
    config, space = write_inputs(tmp_path, synthetic_mpii)
    out = tmp_path / 'search'
    argv = [config, '--space', space, '--mean-trials', '3',
            '--distribution', 'geometric', '--out', str(out),
            '--search-seed', str(seed_with_trials((2, 3)))]
    real_run_trial = private_search.run_trial
    ran = []

    def interrupted(state, trial, private):
        if ran:
            raise KeyboardInterrupt  # as if the machine stopped
        ran.append(trial['name'])
        return real_run_trial(state, trial, private)

    monkeypatch.setattr(private_search, 'run_trial', interrupted)
    with pytest.raises(KeyboardInterrupt):
        private_search.main(argv)
    state_file = out / 'private' / 'state.json'
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600
    state = json.loads(state_file.read_text())
    k = len(state['trials'])
    assert k in (2, 3)
    assert [t['name'] for t in state['trials'] if t['score'] is not None] \
        == ran

    def recorded(state, trial, private):
        ran.append(trial['name'])
        return real_run_trial(state, trial, private)

    monkeypatch.setattr(private_search, 'run_trial', recorded)
    card = private_search.main(argv)
    # K was not redrawn, the finished trial was not rerun.
    assert ran == [t['name'] for t in state['trials']]
    assert not osp.exists(out / 'private')
    assert sorted(os.listdir(out)) == ['release']
    assert sorted(os.listdir(out / 'release')) == [
        'config.py', 'model.pth', 'search_card.json', 'search_card.md']
    plan = state['plan']
    assert card['epsilon'] == search_epsilon(
        [tuple(s) for s in plan['accounted']], plan['delta'],
        TrialCount('geometric', 3))
    assert card['trial']['epsilon'] < card['epsilon']
    # At this tiny scale (4 steps at q = 1/4, a trial epsilon of 8) the
    # RDP repeat-and-select bound exceeds 3 trials composed by PRV; the
    # card says so.
    assert card['naive']['epsilon'] < card['epsilon']
    assert 'costs less' in (out / 'release' / 'search_card.md').read_text()
    assert card['number_of_trials'] == 'secret (see note)'
    assert card['hyperparameters']['privacy.max_grad_norm'] in (0.05, 0.5)
    text = (out / 'release' / 'search_card.md').read_text()
    assert 'deleted' in text and 'FIXED SEARCH SEED' in text
    assert not any(t['name'] in text for t in state['trials'])
    ckpt = torch.load(out / 'release' / 'model.pth', weights_only=False)
    assert ckpt['privacy_search']['epsilon'] == card['epsilon']
    assert ckpt['privacy_ledger']['steps'] == plan['steps']
    assert ckpt['meta']['privacy']['search'] == card
    # A second search in the same folder would spend a new budget.
    with pytest.raises(SystemExit, match='new budget'):
        private_search.main(argv)


def test_a_private_validation_set_is_refused(tmp_path, synthetic_mpii):
    from mmpose_dp.privacy.errors import NotPrivateError
    config, space = write_inputs(tmp_path, synthetic_mpii, False)
    with pytest.raises(NotPrivateError, match='public_validation'):
        private_search.main([config, '--space', space, '--mean-trials', '3',
                             '--out', str(tmp_path / 's')])


def test_a_space_that_changes_the_curve_is_refused(tmp_path, synthetic_mpii):
    from mmpose_dp.privacy.errors import NotPrivateError
    config, space = write_inputs(tmp_path, synthetic_mpii)
    (tmp_path / 'space.py').write_text(
        "space = {'train_dataloader.batch_size': dict(type='choice', "
        "values=[8, 16])}\n")
    with pytest.raises(NotPrivateError, match='sets q'):
        private_search.main([config, '--space', space, '--mean-trials', '3',
                             '--out', str(tmp_path / 's')])


def test_a_trained_but_unscored_trial_is_not_trained_again(tmp_path):
    from mmpose_dp.privacy import PrivacyLedger
    from search_trials import trained
    last = tmp_path / 'last_checkpoint'
    assert not trained(str(last), 4)
    ledger = PrivacyLedger(1e-5)
    for _ in range(3):
        ledger.step(1.0, 0.25)
    torch.save({'privacy_ledger': ledger.state_dict()}, tmp_path / 'e.pth')
    last.write_text(str(tmp_path / 'e.pth'))
    assert not trained(str(last), 4)  # 3 of 4 steps: resume it
    ledger.step(1.0, 0.25)
    torch.save({'privacy_ledger': ledger.state_dict()}, tmp_path / 'e.pth')
    assert trained(str(last), 4)


def test_the_release_deletes_the_keys_trials_kept(tmp_path, synthetic_mpii):
    """A BandMF trial keeps its noise key for a resume; after the release
    nobody resumes, and the best trial's key would let its reader subtract
    the released model's noise."""
    from mmpose_dp.privacy import PrivacyLedger
    from mmpose_dp.privacy.secret_store import SecretStore
    from search_trials import forget_kept_keys
    config, _ = write_inputs(tmp_path, synthetic_mpii)
    secrets = tmp_path / 'secrets'
    with open(config, 'a') as f:
        f.write(f"privacy = dict(secret_dir={str(secrets)!r})\n")
    store = SecretStore(str(secrets))
    trials = []
    for i in range(2):
        ledger = PrivacyLedger(1e-5)
        ledger.step(1.0, 0.25)
        store.save(ledger.lineage, {'noise': 123 + i})
        path = tmp_path / f'trial{i}.pth'
        torch.save({'privacy_ledger': ledger.state_dict()}, path)
        trials.append(dict(checkpoint=str(path)))
    trials.append(dict(name='not trained'))
    other = PrivacyLedger(1e-5)
    store.save(other.lineage, {'noise': 7})  # another run's: kept
    state = dict(config=config, cfg_options=[], trials=trials)
    assert forget_kept_keys(state) == 2
    assert sorted(os.listdir(secrets)) == [f'{other.lineage}.json']
