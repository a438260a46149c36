"""What DPRunner's config rewrite (apply_privacy) makes of a stock config."""
import pytest
from mmengine.config import Config

from mmpose_dp.engine import apply_privacy
from mmpose_dp.engine.privacy_session import PRIVACY_HOOKS


def _cfg(optim_wrapper=None, **privacy):
    return Config(dict(
        privacy=dict(max_grad_norm=1.0, target_epsilon=1.0, **privacy),
        optim_wrapper=optim_wrapper or dict(
            optimizer=dict(type='SGD', lr=0.1)),
        train_dataloader=dict(batch_size=2, dataset=dict()),
        train_cfg=dict(max_epochs=1)))


def test_an_amp_config_trains_in_fp32():
    # MMPose's *_fp16 configs: a dynamic loss scale would multiply every
    # per-sample gradient before clipping.
    out = apply_privacy(_cfg(dict(type='AmpOptimWrapper', loss_scale='dynamic',
                                  optimizer=dict(type='Adam', lr=5e-4))))
    assert out.optim_wrapper.type == 'DPOptimWrapper'
    assert 'loss_scale' not in out.optim_wrapper
    assert out.optim_wrapper.optimizer.type == 'Adam'


def test_another_optim_wrapper_is_refused():
    with pytest.raises(ValueError, match='ApexOptimWrapper'):
        apply_privacy(_cfg(dict(type='ApexOptimWrapper',
                                optimizer=dict(type='SGD', lr=0.1))))


def test_every_privacy_hook_is_added_with_its_keys():
    out = apply_privacy(_cfg(interval=7, disjoint_from_loaded_checkpoint=True,
                             mechanism=dict(type='banded_mf', bands=2)))
    hooks = {h['type']: h for h in out.custom_hooks}
    assert set(hooks) == set(PRIVACY_HOOKS)
    assert hooks['PrivacyLoggerHook']['interval'] == 7
    assert hooks['PrivacyCheckpointHook'][
        'disjoint_from_loaded_checkpoint'] is True
    assert hooks['PrivacyHook']['mechanism'] == dict(type='banded_mf',
                                                     bands=2)
    assert 'interval' not in hooks['PrivacyHook']
