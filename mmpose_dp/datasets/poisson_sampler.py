"""Poisson sampling of the private units (DATA_SAMPLERS)."""
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import broadcast, get_dist_info
from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from ..privacy import secret_seed
from ..privacy.mechanisms import GaussianMechanism, Mechanism
from .privacy_units import (check_unit, group_by_image, record_image_keys,
                            record_unit_keys)
from .public_split import carve_public_images, public_set_id


def shared_secret_seed() -> int:
    """A seed from the OS entropy pool of process 0, broadcast to all.

    Never derived from numpy's or torch's global generators, which MMEngine
    seeds with the logged ``randomness.seed``.
    """
    seed = secret_seed(63)
    if get_dist_info()[1] > 1:
        shared = torch.tensor([seed], dtype=torch.int64)
        broadcast(shared, src=0)
        seed = int(shared.item())
    return seed


@DATA_SAMPLERS.register_module()
class PoissonBatchSampler(Sampler):
    """Each private unit joins each step independently with rate q.

    A unit is one person record with its repeats (``unit='instance'``) or
    one image with all its records (``unit='image'``), images compared by
    content. ``q = batch_size * world_size /
    N_private``, where ``batch_size`` is the expected number of units per
    process and N_private the number of private units. The draw is global:
    every process draws the same units and keeps its share (whole units,
    ``units[rank::world_size]``). An epoch is ``round(1 / q)`` steps, so a
    run takes exactly ``epochs * steps_per_epoch`` steps, including those
    whose batch is empty. No record is padded or repeated within a step, and
    the records of a unit are yielded together.

    Args:
        sampler: the dataloader's sampler; only its dataset is used.
        batch_size: expected number of units per step and process.
        unit: ``'image'`` or ``'instance'``.
        seed: sampling seed. ``None`` (default) draws a secret one from the
            OS entropy pool, shared by all processes and never logged or
            saved: amplification by subsampling assumes that nobody knows
            which records were drawn. A fixed seed voids the guarantee and
            is for tests and debugging only (a warning says so).
        public_samples: carve whole images out of the training set until
            this many records are public (projected DP-SGD), chosen with
            ``public_seed``; they are never drawn and do not count in
            N_private. Their record indices are :attr:`public_indices`.
        public_seed: seed of the carve-out (public: a consent decision).
        steps_per_epoch: default ``round(1 / q)``.

    Which units may join a step, and at what rate, is the privacy
    mechanism's rule (:attr:`mechanism`, DP-SGD's by default: every unit at
    rate q); the PrivacyHook sets the run's. A rule that depends on the step
    (BandMF's cyclic groups) gets the step's index in the privacy ledger:
    the loop sets :attr:`first_step` to the ledger's count before each
    epoch.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 unit: str = 'image',
                 seed: Optional[int] = None,
                 public_samples: Optional[int] = None,
                 public_seed: int = 0,
                 steps_per_epoch: Optional[int] = None) -> None:
        dataset = getattr(sampler, 'dataset', sampler)
        self.unit = check_unit(unit)
        unit_keys = record_unit_keys(dataset, unit)
        self.public_indices: List[int] = []
        self.public_set_id: Optional[str] = None
        if public_samples:
            keys = (unit_keys if unit == 'image' else
                    record_image_keys(dataset))
            self.public_indices = carve_public_images(keys, public_samples,
                                                      public_seed)
            self.public_set_id = public_set_id(
                [keys[i] for i in self.public_indices])
        public = set(self.public_indices)
        # A unit's records are drawn together: an image's people (by image
        # content), or a record and its repeats (RepeatDataset).
        units = [g for g in group_by_image(unit_keys) if g[0] not in public]
        #: A fingerprint of the private units (image contents, record ids):
        #: names the data set a guarantee is about, reveals no record.
        self.private_data_id = public_set_id(
            [unit_keys[int(g[0])] for g in units])
        if not units:
            raise ValueError('the private training set is empty')
        self.units = units
        if batch_size <= 0:
            raise ValueError(f'batch_size must be > 0, got {batch_size}')
        self.rank, self.world_size = get_dist_info()
        self.batch_size = batch_size
        self.expected_batch_size = batch_size * self.world_size
        if self.expected_batch_size > len(units):
            raise ValueError(
                f'expected batch {self.expected_batch_size} exceeds the '
                f'{len(units)} private {unit}s; lower '
                'train_dataloader.batch_size')
        self.sample_rate = self.expected_batch_size / len(units)
        self.steps_per_epoch = steps_per_epoch or max(
            1, round(1 / self.sample_rate))
        self.fixed_seed = seed is not None
        if self.fixed_seed:
            print_log(
                f'[privacy] privacy.sampler_seed is fixed: whoever knows it '
                'knows which records every step drew, which VOIDS the '
                'guarantee (no amplification by subsampling). Use it for '
                'tests and debugging only', logger='current', level=30)
        self._seed = shared_secret_seed() if seed is None else int(seed)
        self.epoch = 0
        self.sampler = sampler
        self.mechanism: Mechanism = GaussianMechanism()
        #: Ledger index of the next epoch's first step (None: epoch x
        #: steps_per_epoch, a fresh run's).
        self.first_step: Optional[int] = None

    @property
    def num_private(self) -> int:
        """N_private: the number of private units."""
        return len(self.units)

    @property
    def private_indices(self) -> np.ndarray:
        """Every private record index."""
        return np.concatenate(self.units)

    @property
    def key(self) -> int:
        """The secret seed, for :class:`~mmpose_dp.privacy.secret_store.
        SecretStore` only (a resumed BandMF run needs its groups)."""
        return self._seed

    def restore_key(self, key: int) -> None:
        """Continue a run whose secret seed was kept."""
        self._seed = int(key)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_draws(self, epoch: int,
                     first_step: Optional[int] = None
                     ) -> Iterator[np.ndarray]:
        """The units (sorted indices into :attr:`units`) drawn at every step
        of ``epoch``, over all processes; the epoch's first step has ledger
        index ``first_step`` (default :attr:`first_step`)."""
        if first_step is None:
            first_step = (epoch * self.steps_per_epoch
                          if self.first_step is None else self.first_step)
        rng = np.random.default_rng([self._seed, epoch])
        for i in range(self.steps_per_epoch):
            yield self.mechanism.draw(rng, first_step + i, self.num_private,
                                      self.sample_rate, self._seed)

    def records(self, drawn: Sequence[int]) -> List[int]:
        """The record indices of the units ``drawn``, unit by unit."""
        if len(drawn) == 0:
            return []
        return np.concatenate([self.units[u] for u in drawn]).tolist()

    def global_batches(self, epoch: int) -> Iterator[List[int]]:
        """The whole (all-process) batch of records of every step."""
        for drawn in self.global_draws(epoch):
            yield self.records(drawn)

    def __iter__(self) -> Iterator[List[int]]:
        # The loop's sampler-seed hook sets the epoch on the wrapped sampler.
        epoch = max(self.epoch, getattr(self.sampler, 'epoch', 0))
        for drawn in self.global_draws(epoch):
            yield self.records(drawn[self.rank::self.world_size])
        self.epoch = epoch + 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __repr__(self) -> str:
        return (f'PoissonBatchSampler(unit={self.unit!r}, q='
                f'{self.sample_rate:.5g}, N_private={self.num_private})')

    def __reduce__(self):
        raise TypeError('a PoissonBatchSampler holds a secret seed and is '
                        'never pickled (checkpoints must not contain it)')
