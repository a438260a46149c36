"""The wrapped optimizer runs its fused kernel unless the config chose."""
import pytest
import torch
from torch import nn

from mmpose_dp.engine import DPOptimWrapper
from mmpose_dp.engine.fused_optimizer import prefer_fused
from mmpose_dp.privacy import PrivacyLedger
from mmpose_dp.privacy.engines import TensorBatchLoss

LOSS = TensorBatchLoss(lambda net, x, y: ((net(x) - y)**2).sum(1).mean())


def _train(optimizer_cls, fused_by_wrapper, **kwargs):
    """Three noiseless DP steps; the parameters and the optimizer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(),
                        nn.Linear(48, 2))
    optimizer = optimizer_cls(net.parameters(), **kwargs)
    ow = DPOptimWrapper(optimizer, max_grad_norm=1.0, noise_seed=0,
                        engine='fast')
    if not fused_by_wrapper:  # as the wrapper finds it, without the switch
        optimizer.param_groups[0]['fused'] = False
    ow.setup(net, 'mean', 0.0, 0.5, 4.0, PrivacyLedger(1e-5),
             batch_loss=LOSS)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(4, 2, 4, 4, generator=g), torch.randn(4, 2,
                                                                generator=g)
        ow.private_micro_batch(net, (x, y), [0, 1, 2, 3])
        ow.private_step()
    return [p.detach().clone() for p in net.parameters()], optimizer


@pytest.mark.parametrize('optimizer_cls,kwargs', [
    (torch.optim.AdamW, dict(lr=1e-2)),
    (torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4))])
def test_the_wrapper_switches_to_the_fused_kernel_same_update(optimizer_cls,
                                                              kwargs):
    fused, optimizer = _train(optimizer_cls, True, **kwargs)
    assert optimizer.param_groups[0]['fused'] is True
    loop, optimizer = _train(optimizer_cls, False, **kwargs)
    assert optimizer.param_groups[0]['fused'] is False
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('kwargs', [dict(fused=False), dict(foreach=True),
                                    dict(foreach=False)])
def test_an_explicit_choice_is_kept(kwargs):
    p = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([p], **kwargs)
    assert not prefer_fused(optimizer)
    assert optimizer.param_groups[0]['fused'] in (None, False)


def test_other_optimizers_and_started_ones_are_left_alone():
    p = nn.Parameter(torch.zeros(3))
    assert not prefer_fused(torch.optim.RMSprop([p]))

    class MySGD(torch.optim.SGD):  # a subclass may change step()
        pass

    assert not prefer_fused(MySGD([p], lr=0.1))
    started = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    started.step()  # its state is the loop's
    assert not prefer_fused(started)
    assert started.param_groups[0]['fused'] is None


def test_parameters_the_fused_kernel_does_not_take_keep_the_loop(
        monkeypatch):
    import torch.optim.optimizer as torch_optimizer

    def refuse(p):  # as torch does for a device without the kernel
        raise RuntimeError('not supported')

    monkeypatch.setattr(torch_optimizer, '_device_dtype_check_for_fused',
                        refuse)
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(3))])
    assert not prefer_fused(optimizer)
    assert optimizer.param_groups[0]['fused'] is None
