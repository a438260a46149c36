import copy

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpose.registry import DATASETS

from mmpose_dp.datasets import (carve_public_indices, check_disjoint,
                                overlapping_records)

from ..conftest import TINY_CONFIG


def _dataset(data_root, split):
    init_default_scope('mmpose')
    cfg = copy.deepcopy(Config.fromfile(TINY_CONFIG).train_dataloader.dataset)
    cfg.data_root = data_root + '/'
    cfg.ann_file = f'annotations/mpii_{split}.json'
    dataset = DATASETS.build(cfg)
    dataset.full_init()
    return dataset


def test_carve_out_is_seeded_and_in_range():
    a = carve_public_indices(1000, 100, seed=0)
    assert a == carve_public_indices(1000, 100, seed=0)
    assert a != carve_public_indices(1000, 100, seed=1)
    assert len(set(a)) == 100 and all(0 <= i < 1000 for i in a)
    with pytest.raises(ValueError, match='num_samples'):
        carve_public_indices(10, 10, seed=0)


def test_a_disjoint_public_set_is_accepted(synthetic_mpii):
    check_disjoint(_dataset(synthetic_mpii, 'val'),
                   _dataset(synthetic_mpii, 'train'))


def test_overlap_with_the_private_set_is_refused(synthetic_mpii):
    private = _dataset(synthetic_mpii, 'train')
    public = _dataset(synthetic_mpii, 'train')
    assert overlapping_records(public, private) == list(range(len(public)))
    with pytest.raises(ValueError, match='also in the private'):
        check_disjoint(public, private)
