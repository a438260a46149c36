from .collate import dp_pseudo_collate, is_empty_batch
from .poisson_sampler import PoissonBatchSampler
from .public_feature import PublicFeatureBlur
from .public_split import (carve_public_indices, check_disjoint,
                           overlapping_records)

__all__ = [
    'dp_pseudo_collate', 'is_empty_batch', 'PoissonBatchSampler',
    'PublicFeatureBlur', 'carve_public_indices', 'check_disjoint',
    'overlapping_records'
]
