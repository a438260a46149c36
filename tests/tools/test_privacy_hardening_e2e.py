"""What a user shares (checkpoint, log, config, work dir) reveals neither the
secret seeds nor un-noised statistics of private data; the privacy unit and
the runner are what the config says."""
import json
import sys

import pytest
import torch

from mmpose_dp.privacy import NotPrivateError, derived_seed

from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file

from ..conftest import tiny_config
from .test_train_test_e2e import _config, _ledger, _run

SECRET = {'privacy.noise_seed': None, 'privacy.sampler_seed': None}


def _weights(path):
    return load_checkpoint_file(path, map_location='cpu')['state_dict']


def test_the_public_runner_seed_does_not_fix_the_poisson_draws(
        tmp_path, synthetic_mpii):
    # No noise: the weights differ only if the Poisson draws differ.
    cfg = _config(tmp_path, synthetic_mpii, **SECRET, **{
        'randomness.seed': 123, 'privacy.target_epsilon': None,
        'privacy.noise_multiplier': 0.0, 'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1})
    runs = []
    for name in ('a', 'b'):
        _run('tools/train.py', cfg, '--work-dir', str(tmp_path / name))
        runs.append(_weights(tmp_path / name / 'epoch_1.pth'))
    assert runs[0].keys() == runs[1].keys()
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def _encodings(value: int):
    """How an integer could sit in a text or binary file."""
    out = [str(value).encode(), hex(value).encode()]
    for size in (8, 16):
        if value < 1 << (8 * size):
            out += [value.to_bytes(size, 'little'),
                    value.to_bytes(size, 'big')]
    return out


def train_recording_secrets(cfg: str, work_dir: str) -> list:
    """tools/train.py in this process; returns every secret seed it drew."""
    import mmpose_dp.datasets.poisson_sampler as sampler_module
    import mmpose_dp.privacy.noise as noise_module
    import train as train_tool
    drawn = []

    def recording(real):
        def draw(*args):
            value = real(*args)
            drawn.append(value)
            return value
        return draw

    patch = pytest.MonkeyPatch()
    patch.setattr(sampler_module, 'secret_seed',
                  recording(sampler_module.secret_seed))
    patch.setattr(noise_module, 'secret_seed',
                  recording(noise_module.secret_seed))
    patch.setattr(sys, 'argv', ['train.py', cfg, '--work-dir', work_dir])
    try:
        train_tool.main()
    finally:
        patch.undo()
    return drawn


def unique_visualizer(tmp) -> dict:
    """MMEngine keeps visualizers by name for the whole process: an earlier
    in-process run's 'visualizer' would take a later run's scalars to its
    own work dir."""
    return {'visualizer.name': f'visualizer_{tmp.name}'}


@pytest.fixture(scope='module')
def secret_run(tmp_path_factory, synthetic_mpii):
    tmp = tmp_path_factory.mktemp('secret')
    cfg = _config(tmp, synthetic_mpii, **SECRET, **unique_visualizer(tmp))
    return tmp / 'work', train_recording_secrets(cfg, str(tmp / 'work'))


def test_no_secret_seed_reaches_the_work_dir(secret_run):
    work, drawn = secret_run
    assert len(drawn) >= 2  # the sampling seed and the noise key
    # The noise of step s is keyed by derived_seed(key, rank 0, s).
    secrets = list(drawn) + [derived_seed(k, 0, s) for k in drawn
                             if k >= 0 for s in range(8)]
    files = [p for p in work.rglob('*') if p.is_file()]
    assert any(p.suffix == '.pth' for p in files)
    assert any(p.suffix == '.log' for p in files)
    for path in files:
        content = path.read_bytes()
        for value in secrets:
            for encoded in _encodings(value):
                assert encoded not in content, (path, value)


def test_checkpoints_and_logs_hold_no_unnoised_private_statistics(
        secret_run):
    work, _ = secret_run
    for ckpt in work.glob('*.pth'):
        hub = load_checkpoint_file(ckpt, map_location='cpu')['message_hub']
        keys = set(hub['log_scalars'])
        assert 'train/epsilon' in keys
        assert not {k for k in keys if 'loss' in k or 'acc' in k}, keys
    scalars = [json.loads(line) for line in
               next(work.glob('*/vis_data/scalars.json')).read_text()
               .splitlines()]
    train = [s for s in scalars if 'epsilon' in s]
    assert train and not any('loss' in s or 'acc_pose' in s for s in train)
    log = next(work.glob('*/*.log')).read_text()
    assert ' loss: ' not in log and 'acc_pose' not in log


def test_private_metrics_reach_only_the_log_when_asked(tmp_path,
                                                       synthetic_mpii):
    cfg = _config(tmp_path, synthetic_mpii, **{
        'privacy.log_private_metrics': True, 'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1})
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    log = proc.stdout + proc.stderr
    assert 'WITHOUT noise' in log and ' loss: ' in log
    hub = load_checkpoint_file(tmp_path / 'w' / 'epoch_1.pth',
                               'cpu')['message_hub']
    assert not {k for k in hub['log_scalars'] if 'loss' in k or 'acc' in k}


def test_a_privacy_config_built_by_another_runner_is_refused(
        tmp_path, synthetic_mpii):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    cfg = tiny_config(synthetic_mpii, str(tmp_path))
    cfg.runner_type = 'Runner'
    with pytest.raises(NotPrivateError, match="runner_type='DPRunner'"):
        RUNNERS.build(cfg)
    cfg.pop('runner_type')
    with pytest.raises(NotPrivateError, match='without differential privacy'):
        Runner.from_cfg(cfg)


@pytest.fixture(scope='module')
def crowd_mpii(tmp_path_factory):
    """24 train images with 2-3 people each, 8 val images."""
    from make_synthetic_mpii import make_synthetic_mpii
    out = tmp_path_factory.mktemp('crowd_mpii')
    summary = make_synthetic_mpii(str(out), num_train=24, num_val=8, seed=1,
                                  people_per_image='2-3')
    return str(out), summary


@pytest.mark.parametrize('unit', ['image', 'instance'])
def test_the_privacy_unit_sets_n_private_and_q(unit, tmp_path, crowd_mpii):
    root, summary = crowd_mpii
    records = summary['train']['records']
    n_private = 24 if unit == 'image' else records
    cfg = _config(tmp_path, root, **{
        'privacy.unit': unit, 'train_dataloader.batch_size': 6,
        'privacy.max_physical_batch_size': 4, 'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1})
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    log = proc.stdout + proc.stderr
    assert f'N_private={n_private} {unit}s ({records} records)' in log
    ckpt = next((tmp_path / 'w').glob('epoch_1.pth'))
    sigma, q, steps = _ledger(ckpt)['segments'][0]
    assert q == pytest.approx(6 / n_private)
    plan = load_checkpoint_file(ckpt, map_location='cpu')['privacy_plan']
    assert plan['unit'] == unit and plan['n_private'] == n_private
    words = 'all its annotated people' if unit == 'image' else 'k * epsilon'
    assert words in plan['privacy_unit']
