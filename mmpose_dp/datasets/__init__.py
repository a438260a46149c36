from .collate import dp_pseudo_collate, is_empty_batch
from .poisson_sampler import PoissonBatchSampler

__all__ = ['dp_pseudo_collate', 'is_empty_batch', 'PoissonBatchSampler']
