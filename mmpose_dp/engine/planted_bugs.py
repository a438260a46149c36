"""Deliberate privacy bugs in the production code paths, for self-checks.

Each is a context manager that breaks one thing the guarantee relies on;
``tools/check_sensitivity.py --self-check`` runs the neighbouring-dataset
check under each and must see it fail. The engine's own first-use check
(:mod:`mmpose_dp.privacy.engines.verification`) would refuse some of them
at start; it is switched off inside them, so that what is tested is the
sensitivity check itself.
"""
import contextlib
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..datasets import PoissonBatchSampler
from ..privacy import clipping
from ..privacy.engines import verification
from ..privacy.mechanisms import BandedMF, GaussianMechanism
from . import loops
from .mmengine_batch import MMEngineBatchLoss
from .optim_wrapper import DPOptimWrapper

#: The number of processes the noise is wrongly divided by.
PROCESSES = 16


@contextlib.contextmanager
def _patched(target, name: str, value):
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


@contextlib.contextmanager
def _unchecked_engines():
    with _patched(verification, 'verify_engine', lambda engine, batch: 0.0):
        yield


@contextlib.contextmanager
def clipping_off():
    """Every engine's clip factors are 1: gradients are summed unclipped."""
    def ones(norms, max_grad_norm):
        return torch.ones_like(norms)

    with _unchecked_engines(), _patched(clipping, 'clip_factors', ones):
        yield


@contextlib.contextmanager
def unit_split():
    """Micro-batches of one sample, whatever the privacy unit: an image
    with k people makes k clipped contributions."""
    def split(data_batch, units, size):
        return [({k: [v[i]] for k, v in data_batch.items()}, [0])
                for i in range(len(units))]

    with _patched(loops, 'split_batch', split):
        yield


@contextlib.contextmanager
def noise_divided_by_processes():
    """Each step's noise std is sigma C / 16, as if every one of 16
    processes added its share but only one did."""
    add_noise = DPOptimWrapper.add_noise

    def divided(self, summed):
        sigma = self.noise_multiplier
        self.noise_multiplier = sigma / PROCESSES
        try:
            add_noise(self, summed)
        finally:
            self.noise_multiplier = sigma

    with _patched(DPOptimWrapper, 'add_noise', divided):
        yield


def _split_tensor_fields_only(self, batch) -> Tuple[List[torch.Tensor],
                                                    object]:
    """The ``vmap`` split of mmpose-dp 0.1 (defect 2 of the second
    hardening): only tensor-valued label fields are split, every other
    field of every sample is sample 0's."""
    samples = batch['data_samples']
    keys = []
    for field in ('gt_fields', 'gt_instance_labels'):
        if field in samples[0]:
            keys += [(field, k) for k, v in samples[0].get(field).items()
                     if torch.is_tensor(v)]
    tensors = [batch['inputs']] + [
        torch.stack([s.get(f).get(k) for s in samples]) for f, k in keys]
    template = samples[0]

    def rebuild(slices) -> Dict:
        sample = template.clone()
        for (field, key), value in zip(keys, slices[1:]):
            sample.get(field).set_field(value, key)
        return dict(inputs=slices[0].unsqueeze(0), data_samples=[sample])

    return tensors, rebuild


@contextlib.contextmanager
def vmap_targets_of_sample_0():
    """``vmap`` trains every sample on sample 0's list-valued targets."""
    with _unchecked_engines(), _patched(MMEngineBatchLoss, 'split',
                                        _split_tensor_fields_only):
        yield


@contextlib.contextmanager
def sampling_without_replacement():
    """Shuffled epochs cut into batches of exactly the expected size (what
    a DataLoader does): not Poisson sampling, no amplification at q."""
    def draws(self, epoch, first_step=None):
        order = np.random.default_rng([self._seed, epoch]).permutation(
            self.num_private)
        size = int(round(self.expected_batch_size))
        for step in range(self.steps_per_epoch):
            yield np.sort(order[step * size:(step + 1) * size])

    with _patched(PoissonBatchSampler, 'global_draws', draws):
        yield


@contextlib.contextmanager
def banded_groups_ignored():
    """BandMF draws every unit at its group rate b q, at every step (not
    only the units of the step's group): a unit then joins steps closer
    than b apart, and at b times DP-SGD's rate."""
    def draw(self, rng, step, num_units, sample_rate, key):
        return np.flatnonzero(rng.random(num_units) <
                              self.unit_rate(sample_rate))

    with _patched(BandedMF, 'draw', draw):
        yield


@contextlib.contextmanager
def banded_noise_white():
    """BandMF adds DP-SGD's white noise: scaled to one step, not the
    correlated stream its accounting (rounds at the group rate) needs."""
    with _patched(BandedMF, 'add_noise', GaussianMechanism.add_noise):
        yield


PLANTED = {
    'sampling-without-replacement': sampling_without_replacement,
    'clipping-off': clipping_off,
    'unit-split': unit_split,
    'noise-divided-by-processes': noise_divided_by_processes,
    'vmap-targets-of-sample-0': vmap_targets_of_sample_0,
    'banded-groups-ignored': banded_groups_ignored,
    'banded-noise-white': banded_noise_white,
}
