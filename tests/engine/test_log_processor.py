"""The training log of a DP run carries no peak GPU memory (it grows with
the largest Poisson batch), unless private metrics are logged on purpose."""
from types import SimpleNamespace

import pytest
from mmengine.logging import MessageHub
from mmengine.runner import log_processor as mmengine_log_processor

from mmpose_dp.engine import DPLogProcessor, apply_privacy


def _runner(log_private_metrics):
    hub = MessageHub.get_instance('dp_log_processor_test')
    hub.update_scalar('train/lr', 0.1)
    hub.update_scalar('train/epsilon', 0.5)
    loop = SimpleNamespace(log_private_metrics=log_private_metrics,
                           dataloader=[0] * 4)
    return SimpleNamespace(
        message_hub=hub, iter=0, epoch=0, max_epochs=1, _train_loop=loop,
        train_loop=loop, train_dataloader=[0] * 4, max_iters=4)


@pytest.mark.parametrize('private', [False, True])
def test_memory_is_logged_only_with_private_metrics(monkeypatch, private):
    # As on a GPU: MMEngine's LogProcessor adds the peak memory.
    monkeypatch.setattr(mmengine_log_processor, 'is_cuda_available',
                        lambda: True)
    monkeypatch.setattr(DPLogProcessor, '_get_max_memory',
                        lambda self, runner: 4321)
    tag, line = DPLogProcessor(by_epoch=True).get_log_after_iter(
        _runner(private), 0, 'train')
    assert ('memory' in tag) is private
    assert ('4321' in line) is private
    assert 'epsilon: 0.5' in line


def test_dp_configs_log_through_it():
    from mmengine.config import Config
    cfg = Config(dict(
        privacy=dict(max_grad_norm=1.0, target_epsilon=1.0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_dataloader=dict(batch_size=2, dataset=dict()),
        train_cfg=dict(max_epochs=1)))
    assert apply_privacy(cfg).log_processor.type == 'DPLogProcessor'
