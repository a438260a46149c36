from .collate import dp_pseudo_collate, is_empty_batch
from .poisson_sampler import PoissonBatchSampler, shared_secret_seed
from .privacy_units import (UNITS, check_unit, group_by_image,
                            image_fingerprint, image_key, record_image_keys,
                            record_image_paths, record_key, record_unit_keys,
                            unit_ids, unit_key)
from .public_feature import PublicFeatureBlur
from .public_split import (carve_public_images, check_disjoint,
                           public_set_id, shared_images)

__all__ = [
    'dp_pseudo_collate', 'is_empty_batch', 'PoissonBatchSampler',
    'shared_secret_seed', 'UNITS', 'check_unit', 'group_by_image',
    'image_fingerprint', 'image_key', 'record_image_keys',
    'record_image_paths', 'record_key', 'record_unit_keys', 'unit_ids',
    'unit_key', 'PublicFeatureBlur',
    'carve_public_images', 'check_disjoint', 'public_set_id',
    'shared_images'
]
