"""The statistical parts of the neighbouring-dataset check: the production
sampler's draws and the released noise, each against the run's mechanism
(see :mod:`.sensitivity_check`)."""
from typing import Dict, List

import numpy as np
import torch

from ..privacy.sensitivity import correlation, flat, noise_statistics

#: z-score bound of the noise and sampling statistics.
NOISE_Z = 6.0
#: Steps of the production sampler's draws that the sampling check counts.
SAMPLING_STEPS = 2000


def sampling_check(sampler, failures: List[str],
                    steps: int = SAMPLING_STEPS) -> Dict:
    """The production sampler's draws (its own code, the check's seed) over
    ``steps`` steps, against its mechanism's rule (DP-SGD: every unit at
    rate q; BandMF: the units of step t's group at rate b q): only eligible
    units are drawn, the number of units per step has the binomial mean and
    variance of Poisson sampling at that rate, and every unit joins about
    that rate of the steps it was eligible for."""
    n, q = sampler.num_private, sampler.sample_rate
    mechanism = sampler.mechanism
    rate = mechanism.unit_rate(q)
    counts, eligible, sizes, pools = np.zeros(n), np.zeros(n), [], []
    outside = []  # steps that drew a unit the mechanism did not let join
    epoch = 0
    while len(sizes) < steps:
        first = epoch * sampler.steps_per_epoch
        for i, drawn in enumerate(sampler.global_draws(epoch, first)):
            pool = mechanism.eligible(first + i, n, sampler.key)
            drawn = np.asarray(drawn, dtype=np.int64)
            if not np.isin(drawn, pool).all():
                outside.append(first + i)
            counts[drawn] += 1
            eligible[pool] += 1
            sizes.append(len(drawn))
            pools.append(len(pool))
        epoch += 1
    if outside:
        failures.append(f'{len(outside)} steps (first {outside[:3]}) drew '
                        'units their mechanism does not let join them')
    sizes = np.asarray(sizes[:steps], dtype=np.float64)
    pools = np.asarray(pools[:steps], dtype=np.float64)
    mean, var = (pools * rate).sum(), (pools * rate * (1 - rate)).sum()
    mean_z = (sizes.sum() - mean) / var**0.5
    var_ratio = (np.sum((sizes - pools * rate)**2) / len(sizes)) / (
        var / len(sizes))
    var_error = (2 / len(sizes))**0.5
    unit_z = np.abs(counts - eligible * rate) / np.maximum(
        eligible * rate * (1 - rate), 1e-12)**0.5
    if abs(mean_z) > NOISE_Z:
        failures.append(f'the sampler draws {sizes.mean():.3g} units per '
                        f'step, Poisson sampling {mean / len(sizes):.3g}')
    if abs(var_ratio - 1) > NOISE_Z * var_error:
        failures.append(f'the number of units per step has {var_ratio:.3g} '
                        'times the variance of Poisson sampling')
    # A unit's count is one of n: the bound grows with sqrt(2 log n).
    if unit_z.max() > NOISE_Z + (2 * np.log(max(n, 2)))**0.5:
        failures.append('a unit joins far more or fewer steps than q of '
                        'them (units are not sampled alike)')
    return dict(steps=len(sizes), mean_z=float(mean_z),
                variance_ratio=float(var_ratio),
                worst_unit_z=float(unit_z.max()))


def noise_check(hook, failures: List[str]) -> Dict:
    """Released minus clipped, whitened by the mechanism (DP-SGD: as it
    is; BandMF: the strategy applied, ``S w``), is N(0, (sigma C)^2) per
    coordinate and independent between steps."""
    noises = hook.sampler.mechanism.whitened(
        [flat(r.released) - flat(r.clipped) for r in hook.releases])
    std = hook.releases[0].noise_std
    stats = noise_statistics(torch.cat(noises), std)
    corr = correlation(noises[0], noises[1]) if len(noises) > 1 else 0.0
    n = noises[0].numel()
    if abs(stats['std_ratio'] - 1) > NOISE_Z * stats['std_ratio_error']:
        failures.append(f"the noise has std {stats['std_ratio']:.4g} sigma C "
                        '(1 expected)')
    if abs(stats['mean_z']) > NOISE_Z:
        failures.append(f"the noise has mean {stats['mean_z']:.3g} standard "
                        'errors (0 expected)')
    if abs(corr) > NOISE_Z / n**0.5:
        failures.append(f'the noise of two steps correlates ({corr:.3g})')
    return dict(stats, step_correlation=corr)
