"""Two CPU processes (gloo) against one: same update, noise added once."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mmpose_dp.engine import DPOptimWrapper
from mmpose_dp.privacy import PrivacyLedger
from mmpose_dp.privacy.engines import TensorBatchLoss

STEPS = 4
N, BATCH = 24, 6.0


def _net():
    torch.manual_seed(0)
    # 4 channels per group: with 2, GroupNorm's input gradient is
    # ill-conditioned (its outputs are +-1 whatever the input).
    return nn.Sequential(nn.Linear(5, 8), nn.GroupNorm(2, 8), nn.Tanh(),
                         nn.Linear(8, 2))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 5, generator=g), torch.randn(N, 2, generator=g)


def _batches():
    g = torch.Generator().manual_seed(2)
    return [torch.nonzero(torch.rand(N, generator=g) < BATCH / N).flatten()
            for _ in range(STEPS)]


def _train(rank, world, sigma, c, noise_seed):
    """DP steps on this process' share of each global Poisson batch."""
    net = _net()
    ow = DPOptimWrapper(torch.optim.SGD(net.parameters(), lr=1.0),
                        max_grad_norm=c, noise_seed=noise_seed)
    ow.setup(net, 'mean', sigma, BATCH / N, BATCH, PrivacyLedger(1e-5),
             batch_loss=TensorBatchLoss(
                 lambda net, x, y: ((net(x) - y)**2).sum(1).mean()))
    x, y = _data()
    updates = []
    for batch in _batches():
        share = batch[rank::world]
        before = torch.cat([p.detach().flatten() for p in net.parameters()])
        if len(share):
            ow.private_micro_batch(net, (x[share], y[share]),
                                   list(range(len(share))))
        ow.private_step()
        after = torch.cat([p.detach().flatten() for p in net.parameters()])
        updates.append(before - after)
    return after, torch.stack(updates)


def _worker(rank, world, store, sigma, c, out):
    # A file rendezvous: no TCP port to pick (and to lose to a race).
    dist.init_process_group('gloo', init_method=f'file://{store}',
                            rank=rank, world_size=world)
    try:
        params, updates = _train(rank, world, sigma, c, noise_seed=0)
        torch.save((params, updates), f'{out}.{rank}')
    finally:
        dist.destroy_process_group()


def _run_two(tmp_path, sigma, c):
    out = str(tmp_path / 'result')
    store = str(tmp_path / 'rendezvous')
    mp.spawn(_worker, args=(2, store, sigma, c, out), nprocs=2)
    return [torch.load(f'{out}.{r}') for r in range(2)]


def test_two_processes_match_one_without_noise(tmp_path):
    results = _run_two(tmp_path, sigma=0.0, c=0.05)
    single_params, single_updates = _train(0, 1, 0.0, 0.05, noise_seed=0)
    for params, updates in results:
        assert torch.allclose(params, single_params, atol=1e-6)
        assert torch.allclose(updates, single_updates, atol=1e-6)
    assert torch.equal(results[0][0], results[1][0])  # ranks identical


def test_two_processes_with_huge_c_give_the_non_private_gradient(tmp_path):
    (params, updates), _ = _run_two(tmp_path, sigma=0.0, c=1e9)
    # Non-private reference: plain SGD on sum_i loss_i / B (B expected).
    net = _net()
    x, y = _data()
    for step, batch in enumerate(_batches()):
        net.zero_grad()
        if len(batch):
            (((net(x[batch]) - y[batch])**2).sum(1).sum() / BATCH).backward()
        update = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
            for p in net.parameters()])
        assert torch.allclose(updates[step], update, atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p -= p.grad


def test_noise_is_added_once_across_processes(tmp_path):
    sigma, c = 2.0, 1e-6  # gradients negligible: the update is the noise
    results = _run_two(tmp_path, sigma=sigma, c=c)
    assert torch.equal(results[0][0], results[1][0])
    noise = results[0][1]
    expected = sigma * c / BATCH
    # 4 steps x 82 params = 328 draws: std within ~15%; N-fold noise would
    # be sqrt(2) = 41% too large.
    assert noise.std().item() == pytest.approx(expected, rel=0.15)
