"""Poisson sampling of the private index set (DATA_SAMPLERS)."""
import math
from typing import Iterator, List, Optional, Sequence

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .public_split import carve_public_indices


@DATA_SAMPLERS.register_module()
class PoissonBatchSampler(Sampler):
    """Each private record joins each step independently with rate q.

    ``q = batch_size * world_size / N_private``: ``batch_size`` is the
    per-process expected batch, as everywhere in MMPose, and the draw is
    global, so every process draws the same batch and keeps its share
    (``batch[rank::world_size]``). An epoch is ``round(1 / q)`` steps, so a
    run takes exactly ``epochs * steps_per_epoch`` steps, including those
    whose batch is empty. No index is padded or repeated within a step.

    Args:
        sampler: the dataloader's sampler; only its dataset is used.
        batch_size: expected batch size per process.
        seed: sampling seed. ``None`` (default) draws a secret one shared by
            all processes: amplification by subsampling assumes an
            adversary does not know which records were drawn, so a fixed,
            published seed is for tests and debugging only.
        public_samples: carve this many records out of the training set
            as public data (projected DP-SGD), chosen with ``public_seed``;
            they are never drawn and do not count in N_private. Their
            indices are :attr:`public_indices`.
        public_seed: seed of the carve-out.
        public_indices: explicit public record indices instead.
        steps_per_epoch: default ``round(1 / q)``.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 seed: Optional[int] = None,
                 public_samples: Optional[int] = None,
                 public_seed: int = 0,
                 public_indices: Optional[Sequence[int]] = None,
                 steps_per_epoch: Optional[int] = None) -> None:
        dataset = getattr(sampler, 'dataset', sampler)
        num_records = len(dataset)
        if public_samples:
            if public_indices is not None:
                raise ValueError('give public_samples or public_indices')
            public_indices = carve_public_indices(num_records,
                                                  public_samples, public_seed)
        self.public_indices = sorted(int(i) for i in public_indices or ())
        public = set(self.public_indices)
        self.private_indices = np.array(
            [i for i in range(num_records) if i not in public], dtype=np.int64)
        if len(self.private_indices) == 0:
            raise ValueError('the private training set is empty')
        if batch_size <= 0:
            raise ValueError(f'batch_size must be > 0, got {batch_size}')
        self.rank, self.world_size = get_dist_info()
        self.batch_size = batch_size
        self.expected_batch_size = batch_size * self.world_size
        if self.expected_batch_size > len(self.private_indices):
            raise ValueError(
                f'expected batch {self.expected_batch_size} exceeds the '
                f'{len(self.private_indices)} private records; lower '
                'train_dataloader.batch_size')
        self.sample_rate = self.expected_batch_size / len(self.private_indices)
        self.steps_per_epoch = steps_per_epoch or max(
            1, round(1 / self.sample_rate))
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.sampler = sampler

    @property
    def num_private(self) -> int:
        return len(self.private_indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int) -> Iterator[np.ndarray]:
        """The whole (all-process) batch of every step of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(self.steps_per_epoch):
            mask = rng.random(self.num_private) < self.sample_rate
            yield self.private_indices[mask]

    def __iter__(self) -> Iterator[List[int]]:
        # The loop's sampler-seed hook sets the epoch on the wrapped sampler.
        epoch = max(self.epoch, getattr(self.sampler, 'epoch', 0))
        for batch in self.global_batches(epoch):
            yield batch[self.rank::self.world_size].tolist()
        self.epoch = epoch + 1

    def __len__(self) -> int:
        return self.steps_per_epoch
