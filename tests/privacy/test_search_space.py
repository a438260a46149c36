import numpy as np
import pytest

from mmpose_dp.privacy.errors import NotPrivateError
from mmpose_dp.privacy.search_space import check_space, draw, nested

SPACE = {
    'optim_wrapper.optimizer.lr': dict(type='log_uniform', low=1e-4,
                                       high=1e-2),
    'privacy.max_grad_norm': dict(type='choice', values=[0.01, 0.1, 1.0]),
    'optim_wrapper.optimizer.weight_decay': dict(type='uniform', low=0,
                                                 high=0.1),
    'privacy.projection.rank': dict(type='int_uniform', low=4, high=8),
}


def test_draws_stay_in_the_space():
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = draw(check_space(SPACE), rng)
        assert 1e-4 <= v['optim_wrapper.optimizer.lr'] <= 1e-2
        assert v['privacy.max_grad_norm'] in (0.01, 0.1, 1.0)
        assert 0 <= v['optim_wrapper.optimizer.weight_decay'] <= 0.1
        assert v['privacy.projection.rank'] in range(4, 9)
    assert list(v) == list(SPACE)


def test_same_stream_same_draws():
    a = draw(SPACE, np.random.default_rng(7))
    assert a == draw(SPACE, np.random.default_rng(7))
    assert a != draw(SPACE, np.random.default_rng(8))


@pytest.mark.parametrize('key', [
    'train_dataloader.batch_size', 'train_cfg.max_epochs',
    'privacy.target_epsilon', 'privacy.noise_multiplier', 'privacy.delta',
    'privacy.unit', 'privacy.mechanism', 'privacy.mechanism.bands',
    'load_from', 'privacy.log_private_metrics', 'privacy.public_data',
    'val_dataloader.dataset.ann_file', 'custom_hooks'])
def test_keys_that_change_the_privacy_curve_are_refused(key):
    with pytest.raises(NotPrivateError, match='same privacy curve'):
        check_space({key: dict(type='choice', values=[1, 2])})


@pytest.mark.parametrize('dist', [
    dict(type='normal'), dict(type='choice', values=[]),
    dict(type='uniform', low=1), dict(type='uniform', low=2, high=1),
    dict(type='log_uniform', low=0, high=1), 0.1])
def test_bad_distributions_are_refused(dist):
    with pytest.raises(ValueError):
        check_space({'optim_wrapper.optimizer.lr': dist})


def test_nested_builds_the_config_tree():
    tree = nested({'optim_wrapper.optimizer.lr': 1e-3,
                   'optim_wrapper.clip_grad': None,
                   'privacy.max_grad_norm': 0.1})
    assert tree == dict(optim_wrapper=dict(optimizer=dict(lr=1e-3),
                                           clip_grad=None),
                        privacy=dict(max_grad_norm=0.1))
