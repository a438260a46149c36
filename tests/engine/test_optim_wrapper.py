"""The DP step on a small model: clipping, noise, scaling, counting."""
import pytest
import torch
from torch import nn

from mmpose_dp.engine import DPOptimWrapper, PrivacyBudgetExceeded
from mmpose_dp.privacy import PrivacyLedger
from mmpose_dp.privacy.engines import TensorBatchLoss

ENGINES = ['fast', 'hooks', 'vmap', 'auto']
SQUARED_ERROR = TensorBatchLoss(
    lambda net, x, y: ((net(x) - y)**2).sum(1).mean())


class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.GroupNorm(1, 3)
        self.fc = nn.Linear(3 * 16, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))


def _wrapper(sigma, c, batch=4.0, seed=0, max_steps=None, lr=1.0,
             engine='hooks'):
    torch.manual_seed(0)
    net = _Net()
    ow = DPOptimWrapper(torch.optim.SGD(net.parameters(), lr=lr),
                        max_grad_norm=c, noise_seed=seed, engine=engine)
    ledger = PrivacyLedger(1e-5)
    ow.setup(net, 'mean', sigma, 0.01, batch, ledger, max_steps,
             batch_loss=SQUARED_ERROR)
    return net, ow, ledger


def _data(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, 4, 4, generator=g), torch.randn(n, 2,
                                                             generator=g)


def _private_micro_batch(net, ow, x, y, units=None):
    ow.private_micro_batch(net, (x, y), list(range(len(x)))
                           if units is None else units)


def _flat(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _per_sample_grads(net, x, y):
    out = []
    for i in range(len(x)):
        net.zero_grad()
        ((net(x[i:i + 1]) - y[i:i + 1])**2).sum(1).mean().backward()
        out.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    net.zero_grad()
    return torch.stack(out)


@pytest.mark.parametrize('engine', ENGINES)
def test_no_noise_huge_c_reproduces_the_non_private_update(engine):
    x, y = _data()
    net, ow, _ = _wrapper(sigma=0.0, c=1e9, batch=4.0, engine=engine)
    before = _flat(net)
    expected = before - _per_sample_grads(net, x, y).mean(0)
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    assert torch.allclose(_flat(net), expected, atol=1e-6)


@pytest.mark.parametrize('engine', ENGINES)
def test_update_is_sum_of_clipped_per_sample_grads_over_expected_batch(
        engine):
    x, y = _data()
    c, expected_batch = 0.05, 10.0
    net, ow, _ = _wrapper(sigma=0.0, c=c, batch=expected_batch,
                          engine=engine)
    grads = _per_sample_grads(net, x, y)
    norms = grads.norm(dim=1)
    assert (norms > c).all()  # every sample is clipped here
    factors = torch.clamp(c / (norms + 1e-6), max=1.0)
    expected = _flat(net) - (grads * factors[:, None]).sum(0) / expected_batch
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    assert torch.allclose(_flat(net), expected, atol=1e-6)


def _whole_and_micro_batched(sigma, splits, **wrapper):
    """Parameters after one logical step on 6 samples taken whole, and
    after the same step taken in the micro-batches ``splits``."""
    x, y = _data(6)
    net_a, ow_a, _ = _wrapper(sigma=sigma, c=0.05, batch=6.0, **wrapper)
    net_b, ow_b, _ = _wrapper(sigma=sigma, c=0.05, batch=6.0, **wrapper)
    _private_micro_batch(net_a, ow_a, x, y)
    ow_a.private_step()
    for sl in splits:
        _private_micro_batch(net_b, ow_b, x[sl], y[sl])
    ow_b.private_step()
    return _flat(net_a), _flat(net_b)


def test_micro_batches_accumulate_to_the_same_update():
    whole, micro = _whole_and_micro_batched(
        0.0, (slice(0, 2), slice(2, 5), slice(5, 6)))
    assert torch.allclose(whole, micro, atol=1e-6)


def test_empty_batch_is_a_counted_noise_only_step_with_the_right_std():
    sigma, c, batch = 2.0, 0.5, 8.0
    net, ow, ledger = _wrapper(sigma=sigma, c=c, batch=batch)
    before = _flat(net)
    ow.private_step()  # no micro-batch at all
    update = before - _flat(net)
    assert ledger.steps == 1
    expected_std = sigma * c / batch
    # 65 parameters only: a loose check here, a tight one below.
    assert update.std().item() == pytest.approx(expected_std, rel=0.35)


def test_noise_std_is_sigma_c_over_expected_batch():
    sigma, c, batch = 1.3, 0.2, 16.0
    updates = []
    net, ow, _ = _wrapper(sigma=sigma, c=c, batch=batch)
    for _ in range(200):
        before = _flat(net)
        ow.private_step()
        updates.append(before - _flat(net))
    u = torch.stack(updates)
    # 13,000 draws: the std's standard error is ~0.6%; allow 3%.
    assert u.std().item() == pytest.approx(sigma * c / batch, rel=0.03)
    assert abs(u.mean().item()) < 4 * sigma * c / batch / u.numel()**0.5
    assert not torch.equal(u[0], u[1])  # fresh noise every step


def test_seeded_runs_are_reproducible():
    x, y = _data()
    results = []
    for _ in range(2):
        net, ow, _ = _wrapper(sigma=1.0, c=0.1, seed=123)
        for _ in range(3):
            _private_micro_batch(net, ow, x, y)
            ow.private_step()
        results.append(_flat(net))
    assert torch.equal(results[0], results[1])


def test_step_beyond_the_budget_is_refused():
    net, ow, ledger = _wrapper(sigma=1.0, c=0.1, max_steps=2)
    ow.private_step()
    ow.private_step()
    with pytest.raises(PrivacyBudgetExceeded):
        ow.private_step()
    assert ledger.steps == 2


@pytest.mark.parametrize('engine', ENGINES)
def test_unclipped_gradient_never_reaches_the_optimizer(engine):
    x, y = _data()
    net, ow, _ = _wrapper(sigma=0.0, c=1e-4, engine=engine)
    _private_micro_batch(net, ow, x, y)
    assert all(p.grad is None for p in net.parameters())
    before = _flat(net)
    ow.private_step()
    # 4 clipped samples of norm <= 1e-4 over B = 4: update norm <= 1e-4.
    assert (before - _flat(net)).norm() <= 1e-4 + 1e-7


def test_frozen_parameters_are_excluded():
    torch.manual_seed(0)
    net = _Net()
    net.conv.requires_grad_(False)
    ow = DPOptimWrapper(
        torch.optim.SGD([p for p in net.parameters() if p.requires_grad],
                        lr=1.0), max_grad_norm=0.1, noise_seed=0)
    ow.setup(net, 'mean', 1.0, 0.01, 4.0, PrivacyLedger(1e-5),
             batch_loss=SQUARED_ERROR)
    frozen = net.conv.weight.detach().clone()
    x, y = _data()
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    assert torch.equal(net.conv.weight, frozen)
    assert all(p.requires_grad for p in ow.params)


def test_gradient_accumulation_is_refused():
    net = _Net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    with pytest.raises(ValueError, match='max_physical_batch_size'):
        DPOptimWrapper(opt, max_grad_norm=1.0, accumulative_counts=2)


def test_a_stock_clip_grad_clips_the_noisy_update():
    # MMEngine's clip_grad (ViTPose's config has one) acts on the noisy
    # update: post-processing; per-sample clipping stays max_grad_norm.
    torch.manual_seed(0)
    net = _Net()
    ow = DPOptimWrapper(torch.optim.SGD(net.parameters(), lr=1.0),
                        max_grad_norm=1.0, noise_seed=0,
                        clip_grad=dict(max_norm=1e-3))
    ow.setup(net, 'mean', 5.0, 0.01, 4.0, PrivacyLedger(1e-5),
             batch_loss=SQUARED_ERROR)
    before = _flat(net)
    x, y = _data()
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    # sigma C / B = 1.25 per coordinate, clipped to a total norm of 1e-3.
    assert (before - _flat(net)).norm() <= 1e-3 + 1e-6


def test_micro_batches_draw_the_noise_once_per_logical_step():
    whole, micro = _whole_and_micro_batched(
        1.0, (slice(0, 2), slice(2, 4), slice(4, 6)), seed=9)
    # Same seed, same update: one draw, not one per micro-batch.
    assert torch.allclose(whole, micro, atol=1e-6)


def test_private_micro_batches_block_ddp_gradient_sync():
    calls = []

    class _Wrapped(_Net):
        def no_sync(self):
            import contextlib
            calls.append('no_sync')
            return contextlib.nullcontext()

    net = _Wrapped()
    ow = DPOptimWrapper(torch.optim.SGD(net.parameters(), lr=1.0),
                        max_grad_norm=1.0, noise_seed=0)
    ow.attach(net, 'mean', SQUARED_ERROR)
    x, y = _data()
    ow.private_micro_batch(net, (x, y), [0, 1, 2, 3])
    assert calls == ['no_sync']


def _noise_updates(steps_taken, steps, seed=7):
    """Updates of noise-only steps, starting after ``steps_taken`` steps
    (as a run resumed from a checkpoint of that many steps)."""
    net, ow, ledger = _wrapper(sigma=1.0, c=1.0, seed=seed)
    for _ in range(steps_taken):
        ledger.step(1.0, 0.01)
    out = []
    for _ in range(steps):
        before = _flat(net)
        ow.private_step()
        out.append(before - _flat(net))
    return out


def test_a_resumed_run_continues_the_noise_stream_instead_of_replaying_it():
    straight = _noise_updates(0, 3)
    resumed = _noise_updates(2, 1)
    assert torch.allclose(resumed[0], straight[2], atol=1e-6)  # continues
    assert not torch.allclose(resumed[0], straight[0], atol=1e-2)  # no replay


def test_the_noise_key_is_never_pickled():
    import pickle
    _, ow, _ = _wrapper(sigma=1.0, c=1.0, seed=None)
    with pytest.raises(TypeError, match='secret'):
        pickle.dumps(ow.noise)


@pytest.mark.parametrize('engine', ENGINES)
def test_a_unit_of_several_samples_is_clipped_once(engine):
    # 6 samples from 3 images (units 0, 0, 1, 1, 1, 2): each image's summed
    # gradient is clipped to C, so the update is at most 3 C / B.
    x, y = _data(6)
    units = [0, 0, 1, 1, 1, 2]
    c, batch = 0.05, 3.0
    net, ow, _ = _wrapper(sigma=0.0, c=c, batch=batch, engine=engine)
    grads = _per_sample_grads(net, x, y)
    per_unit = torch.stack([grads[[i for i, u in enumerate(units) if u == k]]
                            .sum(0) for k in range(3)])
    norms = per_unit.norm(dim=1)
    assert (norms > c).all()
    expected = _flat(net) - (per_unit * (c / (norms + 1e-6))[:, None]
                             ).sum(0) / batch
    _private_micro_batch(net, ow, x, y, units=units)
    ow.private_step()
    assert torch.allclose(_flat(net), expected, atol=1e-6)


def test_an_already_reduced_loss_is_refused():
    x, y = _data()
    net, ow, _ = _wrapper(sigma=0.0, c=1.0)
    with pytest.raises(RuntimeError, match='private_micro_batch'):
        ow.update_params(((net(x) - y)**2).sum(1).mean())
    with pytest.raises(ValueError, match='one privacy unit id per sample'):
        ow.private_micro_batch(net, (x, y), [0, 1])


def _clipped_update(net, x, y, c, batch, names):
    """-(sum of per-sample gradients clipped to c over ``names``) / batch,
    as one flat vector over all parameters (zero elsewhere)."""
    params = dict(net.named_parameters())
    rows = []
    for i in range(len(x)):
        loss = ((net(x[i:i + 1]) - y[i:i + 1])**2).sum(1).mean()
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        rows.append(dict(zip(names, grads)))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for row in rows:
        norm = torch.cat([g.flatten() for g in row.values()]).norm()
        factor = min(1.0, c / (float(norm) + 1e-6))
        for n, g in row.items():
            total[n] += factor * g
    return -torch.cat([total[n].flatten() for n in params]) / batch


@pytest.mark.parametrize('engine', ENGINES)
def test_a_parameter_unfrozen_mid_run_is_clipped_and_noised(engine):
    # Gradual unfreezing: fc alone first, then conv and norm too. The
    # optimizer holds every parameter; it may only ever apply the engine's
    # (clipped, noised) gradient, never a plain batch gradient.
    x, y = _data()
    c, batch = 0.01, 4.0
    torch.manual_seed(0)
    net = _Net()
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith('fc.'))
    ow = DPOptimWrapper(torch.optim.SGD(net.parameters(), lr=1.0),
                        max_grad_norm=c, noise_seed=0, engine=engine)
    ow.setup(net, 'mean', 0.0, 0.01, batch, PrivacyLedger(1e-5),
             batch_loss=SQUARED_ERROR)
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    for p in net.parameters():
        p.requires_grad_(True)  # e.g. a hook at the next epoch
    names = [n for n, _ in net.named_parameters()]
    before = _flat(net)
    expected = before + _clipped_update(net, x, y, c, batch, names)
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    assert torch.allclose(_flat(net), expected, atol=1e-7)
    assert (_flat(net) - before).norm() <= c / batch * len(x) * (1 + 1e-5)
    assert ow.engine.names == names


@pytest.mark.parametrize('engine', ['fast', 'hooks'])
def test_a_parameter_frozen_mid_run_gets_no_gradient(engine):
    x, y = _data()
    net, ow, _ = _wrapper(sigma=0.5, c=0.05, engine=engine)
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    net.conv.weight.requires_grad_(False)
    frozen = net.conv.weight.detach().clone()
    _private_micro_batch(net, ow, x, y)
    ow.private_step()
    assert net.conv.weight.grad is None
    assert torch.equal(net.conv.weight, frozen)
    assert 'conv.weight' not in ow.engine.names


def test_the_trainable_set_may_not_change_within_a_step():
    from mmpose_dp.privacy import NotPrivateError
    x, y = _data()
    net, ow, _ = _wrapper(sigma=0.0, c=0.05)
    _private_micro_batch(net, ow, x[:2], y[:2])
    net.conv.weight.requires_grad_(False)
    with pytest.raises(NotPrivateError, match='within a DP step'):
        _private_micro_batch(net, ow, x[2:], y[2:])
