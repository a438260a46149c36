"""BandMF through the training components (sampler, DP optim wrapper,
ledger, planning, secret keys): ``bands=1`` is DP-SGD bit for bit, and with
``bands > 1`` the batches, the noise, the accounting and a resume are those
of amplified banded matrix factorization."""
import math
import os
import stat
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from prv_accountant import Accountant
from torch import nn

from mmpose_dp.datasets import PoissonBatchSampler
from mmpose_dp.engine import DPOptimWrapper, PrivacySession
from mmpose_dp.engine.secret_keys import keep_secret_keys
from mmpose_dp.privacy import (NoiseStream, NotPrivateError, PrivacyLedger,
                               plan_noise)
from mmpose_dp.privacy.engines import TensorBatchLoss
from mmpose_dp.privacy.mechanisms import (BandedMF, GaussianMechanism,
                                          strategy_matrix)

DELTA = 1e-5
LOSS = TensorBatchLoss(lambda net, x, y: ((net(x) - y)**2).sum(1).mean())


class _Records:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def get_data_info(self, i):
        return dict(img_path=f'/d/{i:06d}.jpg', id=i)


def _sampler(mechanism, n=60, batch=6, seed=3):
    sampler = PoissonBatchSampler(SimpleNamespace(dataset=_Records(n),
                                                  epoch=0),
                                  batch_size=batch, seed=seed)
    sampler.mechanism = mechanism
    return sampler


def _wrapper(mechanism, sigma=1.0, width=60, seed=7):
    torch.manual_seed(0)
    net = nn.Linear(width, width)
    ow = DPOptimWrapper(torch.optim.SGD(net.parameters(), lr=1.0),
                        max_grad_norm=1.0, noise_seed=seed, engine='hooks')
    ledger = PrivacyLedger(DELTA, mechanism)
    ow.setup(net, 'mean', sigma, 0.05, 4.0, ledger, batch_loss=LOSS)
    released = []
    ow.release_observers.append(
        lambda r: released.append(torch.cat([t.flatten()
                                             for t in r.released])))
    return net, ow, ledger, released


def _noise_only_steps(ow, n):
    for _ in range(n):
        ow.private_step()  # an empty batch: the release is the noise


# -- bands = 1 is DP-SGD ----------------------------------------------------
def test_one_band_draws_dp_sgd_batches_bit_for_bit():
    dp_sgd, banded = _sampler(GaussianMechanism()), _sampler(BandedMF(1))
    for epoch in range(3):
        for a, b in zip(dp_sgd.global_draws(epoch),
                        banded.global_draws(epoch)):
            assert np.array_equal(a, b)


def test_one_band_adds_dp_sgd_noise_bit_for_bit():
    nets = []
    for mechanism in (GaussianMechanism(), BandedMF(1)):
        net, ow, _, _ = _wrapper(mechanism)
        _noise_only_steps(ow, 4)
        nets.append(torch.cat([p.detach().flatten()
                               for p in net.parameters()]))
    assert torch.equal(nets[0], nets[1])


# -- bands > 1 --------------------------------------------------------------
def test_each_unit_joins_only_steps_of_its_group_at_rate_b_q():
    bands = 3
    sampler = _sampler(BandedMF(bands), n=300, batch=6)
    sampler.first_step = 5  # a resumed epoch: ledger steps 5, 6, ...
    seen = {}
    sizes = []
    for epoch in range(4):
        sampler.first_step = 5 + epoch * sampler.steps_per_epoch
        for i, drawn in enumerate(sampler.global_draws(epoch)):
            step = sampler.first_step + i
            sizes.append(len(drawn))
            for unit in drawn:
                seen.setdefault(int(unit), []).append(step)
    groups = BandedMF(bands).groups(300, sampler.key)
    for unit, steps in seen.items():
        group = next(g for g, members in enumerate(groups) if unit in members)
        assert all(s % bands == group for s in steps)
        assert all(b - a >= bands for a, b in zip(steps, steps[1:]))
    # Each eligible unit at rate b q: the expected batch stays q N.
    assert np.mean(sizes) == pytest.approx(6, rel=0.15)


def test_the_released_noise_has_the_banded_covariance():
    bands, steps, sigma = 3, 6, 2.0
    _, ow, _, released = _wrapper(BandedMF(bands), sigma=sigma, width=100)
    _noise_only_steps(ow, steps)
    noise = torch.stack(released).double()  # [steps, coordinates]
    empirical = noise @ noise.T / noise.shape[1] / sigma**2
    c = strategy_matrix(bands, steps)
    inverse = torch.linalg.inv(c)
    expected = inverse @ inverse.T  # Cov(C^-1 z), z white
    # 10,100 coordinates: sampling error about sqrt(2 / n) ~ 0.014 per entry.
    assert torch.allclose(empirical, expected, atol=0.08), (
        empirical - expected).abs().max()
    assert (expected - torch.eye(steps)).abs().max() > 0.3  # not white


def test_a_resume_continues_the_correlated_stream():
    key = 123456789
    _, whole, _, released = _wrapper(BandedMF(3))
    whole.noise = NoiseStream.restored(key)
    _noise_only_steps(whole, 6)
    _, first, ledger, _ = _wrapper(BandedMF(3))
    first.noise = NoiseStream.restored(key)
    _noise_only_steps(first, 2)
    # A new process: a fresh mechanism and wrapper, the checkpoint's ledger
    # and the kept key.
    _, resumed, later_ledger, later = _wrapper(BandedMF(3))
    later_ledger.load_state_dict(ledger.state_dict())
    resumed.noise = NoiseStream.restored(key)
    _noise_only_steps(resumed, 4)
    for got, want in zip(later, released[2:]):
        assert torch.equal(got, want)


def _prv_epsilon(sigma, rate, rounds):
    """An independent computation: prv_accountant's own accountant."""
    accountant = Accountant(noise_multiplier=sigma, sampling_probability=rate,
                            delta=DELTA, eps_error=0.01, max_compositions=rounds)
    return accountant.compute_epsilon(num_compositions=rounds)[2]


def test_banded_accounting_is_dp_sgd_at_the_group_rate_over_rounds():
    bands, q, sigma, steps = 4, 0.02, 1.0, 50
    ledger = PrivacyLedger(DELTA, BandedMF(bands))
    for _ in range(steps):
        ledger.step(sigma, q)
    rounds = math.ceil(steps / bands)
    assert ledger.epsilon() == pytest.approx(
        _prv_epsilon(sigma, bands * q, rounds), abs=0.02)
    plan = plan_noise(2.0, None, DELTA, q, steps, mechanism=BandedMF(bands))
    planned = PrivacyLedger(DELTA, BandedMF(bands))
    for _ in range(plan.allowed_steps):
        planned.step(plan.noise_multiplier, q)
    assert plan.allowed_steps == steps and planned.epsilon() <= 2.0
    assert _prv_epsilon(plan.noise_multiplier, bands * q, rounds) <= 2.0 + 0.02


def test_a_ledger_of_another_mechanism_is_not_continued():
    ledger = PrivacyLedger(DELTA, BandedMF(2))
    ledger.step(1.0, 0.1)
    for other in (GaussianMechanism(), BandedMF(4)):
        with pytest.raises(NotPrivateError, match='banded_mf'):
            PrivacyLedger(DELTA, other).load_state_dict(ledger.state_dict())
    PrivacyLedger(DELTA, BandedMF(2)).load_state_dict(ledger.state_dict())


# -- the secret keys a resume needs -----------------------------------------
def _toy_runner(tmp_path, resumed, mechanism=None):
    session = PrivacySession()
    session.ledger = PrivacyLedger(DELTA, mechanism or BandedMF(2))
    session.resumed_plan = object() if resumed else None
    runner = SimpleNamespace(logger=MMLogger.get_instance(
        f'secret_keys_{tmp_path.name}_{resumed}'))
    ow = SimpleNamespace(noise=NoiseStream())
    sampler = _sampler(BandedMF(2), seed=None)
    return runner, session, ow, sampler


def test_a_banded_run_keeps_its_keys_privately_and_a_resume_restores_them(
        tmp_path):
    secrets = tmp_path / 'secrets'
    runner, session, ow, sampler = _toy_runner(tmp_path, resumed=False)
    keep_secret_keys(runner, session, ow, sampler, str(secrets))
    path = secrets / f'{session.ledger.lineage}.json'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    # The resumed process draws fresh keys, then takes the kept ones.
    _, later, ow2, sampler2 = _toy_runner(tmp_path, resumed=True)
    later.ledger.load_state_dict(session.ledger.state_dict())
    assert ow2.noise.key != ow.noise.key
    keep_secret_keys(runner, later, ow2, sampler2, str(secrets))
    assert ow2.noise.key == ow.noise.key and not ow2.noise.fixed
    assert sampler2.key == sampler.key


def test_a_banded_resume_without_its_keys_is_refused(tmp_path):
    runner, session, ow, sampler = _toy_runner(tmp_path, resumed=True)
    with pytest.raises(NotPrivateError, match='secret keys'):
        keep_secret_keys(runner, session, ow, sampler, str(tmp_path))


def test_dp_sgd_keeps_no_key(tmp_path):
    runner, session, ow, sampler = _toy_runner(
        tmp_path, resumed=False, mechanism=GaussianMechanism())
    keep_secret_keys(runner, session, ow, sampler, str(tmp_path / 's'))
    assert not (tmp_path / 's').exists()


def test_a_banded_resume_with_more_steps_keeps_its_sigma():
    # A crash after 6 of 10 planned steps; the rerun of the epoch would take
    # 8 more: DP-SGD recalibrates the rest, BandMF keeps its one sigma and
    # the budget bounds the steps to what the plan allowed.
    from mmpose_dp.privacy.plan import PrivacyPlan
    from mmpose_dp.privacy.accounting import Segment
    q, target, mechanism = 0.05, 2.0, BandedMF(2)
    first = plan_noise(target, None, DELTA, q, 10, mechanism=mechanism)
    resumed = PrivacyPlan(
        unit='image', n_private=100, private_data=None, target_epsilon=target,
        delta=DELTA, sample_rate=q, total_steps=10,
        noise_multiplier=first.noise_multiplier, sigma_source='calibrated',
        max_grad_norm=1.0, method='BandedMF(bands=2)', labels_public=False,
        privacy_unit='', protected='', public='')
    prior = [Segment(first.noise_multiplier, q, 6)]
    again = plan_noise(target, None, DELTA, q, 8, prior, resumed, mechanism)
    assert again.noise_multiplier == first.noise_multiplier
    assert 'one sigma per run' in again.note
    assert 6 < again.allowed_steps <= 10 + 1
    dp_sgd = plan_noise(target, None, DELTA, q, 8, prior, resumed)
    assert dp_sgd.noise_multiplier != first.noise_multiplier
