"""Privacy mechanisms (mmpose_dp.privacy.mechanisms): DP-SGD's Gaussian and
BandMF with cyclic Poisson sampling, each checked on its own (no MMEngine).
"""
import math
import pickle

import numpy as np
import pytest
import torch
from prv_accountant import PRVAccountant
from prv_accountant.privacy_random_variables import \
    PoissonSubsampledGaussianMechanism

from mmpose_dp.privacy import NoiseStream, NotPrivateError, Segment
from mmpose_dp.privacy.accounting import epsilon_prv
from mmpose_dp.privacy.calibration import calibrate_noise_multiplier
from mmpose_dp.privacy.mechanisms import (BandedMF, GaussianMechanism,
                                          Mechanism, banded_sqrt_coefficients,
                                          build_mechanism, register_mechanism,
                                          strategy_matrix)

KEY = 12345  # the sampler's key (a fixed one: tests only)


def _shapes():
    return [torch.zeros(3, 4, dtype=torch.float64),
            torch.zeros(7, dtype=torch.float64)]


def _noise(mechanism, stream, step, std=1.5, shapes=None):
    summed = [t.clone() for t in (shapes or _shapes())]
    mechanism.add_noise(summed, std, stream, 0, step)
    return summed


def test_registry_builds_by_name_and_refuses_unknown_or_taken_names():
    assert isinstance(build_mechanism(None), GaussianMechanism)
    assert isinstance(build_mechanism('gaussian'), GaussianMechanism)
    banded = build_mechanism(dict(type='banded_mf', bands=4))
    assert banded.config() == dict(type='banded_mf', version=1, bands=4)
    with pytest.raises(ValueError, match='unknown privacy.mechanism'):
        build_mechanism('laplace')
    with pytest.raises(ValueError, match='taken'):
        register_mechanism(GaussianMechanism)

    class Nameless(Mechanism):
        pass
    with pytest.raises(ValueError, match='empty'):
        register_mechanism(Nameless)
    with pytest.raises(ValueError, match='bands'):
        BandedMF(0)


def test_one_band_is_dp_sgd_bit_for_bit():
    gaussian, banded = GaussianMechanism(), BandedMF(1)
    assert banded_sqrt_coefficients(1) == [1.0]
    stream = NoiseStream(7)
    for step in range(6):
        assert all(torch.equal(a, b) for a, b in zip(
            _noise(gaussian, stream, step), _noise(banded, stream, step)))
    # Batches: the same draws as the sampler's rng.random(N) < q.
    n, q = 50, 0.1
    for step in range(6):
        rng_a, rng_b, rng_c = (np.random.default_rng([1, step])
                               for _ in range(3))
        want = np.flatnonzero(rng_a.random(n) < q)
        assert np.array_equal(gaussian.draw(rng_b, step, n, q, KEY), want)
        assert np.array_equal(banded.draw(rng_c, step, n, q, KEY), want)
    segments = [Segment(1.1, q, 30), Segment(0.9, q, 5)]
    assert banded.segments(segments) == gaussian.segments(segments)


def test_gaussian_noise_is_the_production_draw():
    # DPOptimWrapper.add_noise: add_gaussian_noise with the generator of
    # (key, rank, ledger step), in parameter order.
    from mmpose_dp.privacy import add_gaussian_noise
    stream = NoiseStream(3)
    want = _shapes()
    add_gaussian_noise(want, 1.5, stream.generator(torch.device('cpu'), 0, 4))
    got = _noise(GaussianMechanism(), stream, 4)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_banded_noise_is_the_inverse_strategy_applied_to_white_noise():
    bands, steps, std = 3, 9, 1.5
    stream, mechanism = NoiseStream(11), BandedMF(bands)
    noise = torch.stack([torch.cat([t.flatten() for t in _noise(
        mechanism, stream, t, std)]) for t in range(steps)])
    # The white draws z_t, made the way the mechanism makes them.
    z = []
    for t in range(steps):
        generator = stream.generator(torch.device('cpu'), 0, t)
        z.append(torch.normal(0.0, std, size=(sum(
            s.numel() for s in _shapes()),), generator=generator,
            dtype=_shapes()[0].dtype))
    strategy = strategy_matrix(bands, steps)
    assert torch.allclose(strategy @ noise, torch.stack(z), atol=1e-12)
    # b bands: C[t, t-j] = 0 for j >= b; columns of norm <= 1.
    assert (strategy.tril(-bands) == 0).all()
    assert float(strategy.norm(dim=0).max()) == pytest.approx(1.0)


def test_released_noise_has_the_banded_covariance():
    # Cov(w) = std^2 C^-1 C^-T; white noise would have a diagonal one.
    bands, steps, std, n = 4, 8, 1.3, 200_000
    stream, mechanism = NoiseStream(5), BandedMF(bands)
    shape = [torch.zeros(n, dtype=torch.float64)]
    w = torch.stack([_noise(mechanism, stream, t, std, shape)[0]
                     for t in range(steps)])
    inverse = torch.linalg.inv(strategy_matrix(bands, steps))
    want = std ** 2 * inverse @ inverse.T
    got = w @ w.T / n
    diag = torch.diag(want)
    standard_error = torch.sqrt((diag[:, None] * diag[None, :] + want ** 2)
                                / n)
    assert ((got - want).abs() <= 6 * standard_error).all(), (got - want)
    off = want - torch.diag(diag)
    assert float(off.abs().max()) > 50 * float(standard_error.max())


def test_a_resumed_run_continues_the_correlated_stream():
    bands, stream = 4, NoiseStream(9)
    uninterrupted = BandedMF(bands)
    full = [_noise(uninterrupted, stream, t) for t in range(10)]
    resumed = BandedMF(bands)  # a new process: no noise kept, same key
    for t in range(6, 10):
        got = _noise(resumed, stream, t)
        assert all(torch.equal(a, b) for a, b in zip(got, full[t]))
    with pytest.raises(TypeError, match='never pickled'):
        pickle.dumps(resumed._noise)


@pytest.mark.parametrize('bands', [2, 4, 8])
def test_cyclic_poisson_sampling_draws_one_secret_group_a_step(bands):
    n, q, steps = 203, 0.02, 64
    mechanism = BandedMF(bands)
    groups = mechanism.groups(n, KEY)
    assert len(groups) == bands
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(n))
    assert max(len(g) for g in groups) - min(len(g) for g in groups) <= 1
    assert any(not np.array_equal(a, b) for a, b in zip(
        groups, BandedMF(bands).groups(n, KEY + 1)))  # keyed by the secret
    rng = np.random.default_rng(0)
    joined = {}
    sizes = []
    for step in range(steps):
        drawn = mechanism.draw(rng, step, n, q, KEY)
        assert set(drawn) <= set(groups[step % bands])
        sizes.append(len(drawn))
        for unit in drawn:
            joined.setdefault(int(unit), []).append(step)
    # A unit's steps are >= b apart, at most ceil(T / b) of them.
    for unit_steps in joined.values():
        assert len(unit_steps) <= math.ceil(steps / bands)
        assert all(b - a >= bands for a, b in zip(unit_steps, unit_steps[1:]))
    # Rate b q within the group: the expected batch stays about q N.
    assert np.mean(sizes) == pytest.approx(q * n, rel=0.35)
    assert mechanism.unit_rate(q) == pytest.approx(bands * q)


@pytest.mark.parametrize('bands', [1, 2, 4, 8])
def test_accounting_is_dp_sgd_over_rounds_at_the_group_rate(bands):
    sigma, q, steps, delta = 1.1, 0.01, 1000, 1e-5
    segments = BandedMF(bands).segments([Segment(sigma, q, steps)])
    got = epsilon_prv(segments, delta)
    # Independently: prv-accountant on ceil(T / b) compositions at b q.
    rounds = max(len(range(g, steps, bands)) for g in range(bands))
    accountant = PRVAccountant(
        prvs=[PoissonSubsampledGaussianMechanism(
            noise_multiplier=sigma, sampling_probability=min(1, bands * q))],
        max_self_compositions=[rounds], eps_error=0.01 * got,
        delta_error=1e-3 * delta)
    low, _, high = accountant.compute_epsilon(delta, [rounds])
    assert low - 0.02 * got <= got <= high + 0.02 * got
    if bands == 1:
        assert got == pytest.approx(epsilon_prv([Segment(sigma, q, steps)],
                                                delta))


def test_banded_mf_keeps_one_sigma_and_rate_a_run():
    with pytest.raises(NotPrivateError, match='one noise multiplier'):
        BandedMF(2).segments([Segment(1.0, 0.01, 10), Segment(1.2, 0.01, 10)])
    # The same mechanism over two segments (a resume) merges.
    assert BandedMF(2).segments([Segment(1.0, 0.01, 10),
                                 Segment(1.0, 0.01, 11)]) == [
        Segment(1.0, 0.02, 11)]


@pytest.mark.parametrize('bands', [1, 4])
def test_planned_sigma_meets_the_target(bands):
    target, delta, q, steps = 4.0, 1e-5, 0.02, 400
    mechanism = BandedMF(bands)
    sigma = mechanism.plan_noise_multiplier(target, delta, q, steps)
    spent = epsilon_prv(mechanism.segments([Segment(sigma, q, steps)]), delta)
    assert spent <= target
    assert spent >= 0.97 * target  # not needlessly noisy
    if bands == 1:
        assert sigma == calibrate_noise_multiplier(target, delta, q, steps)
