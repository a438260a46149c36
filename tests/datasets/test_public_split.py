import copy
import json
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpose.registry import DATASETS

from mmpose_dp.datasets import (carve_public_images, check_disjoint,
                                public_set_id, shared_images)
from mmpose_dp.privacy import NotPrivateError

from ..conftest import TINY_CONFIG


def _dataset(data_root, split=None, ann_file=None):
    init_default_scope('mmpose')
    cfg = copy.deepcopy(Config.fromfile(TINY_CONFIG).train_dataloader.dataset)
    cfg.data_root = data_root + '/'
    cfg.ann_file = ann_file or f'annotations/mpii_{split}.json'
    dataset = DATASETS.build(cfg)
    dataset.full_init()
    return dataset


def test_carve_out_is_seeded_and_takes_whole_images():
    keys = [f'img{i // 3}' for i in range(1000)]  # 3 records per image
    a = carve_public_images(keys, 100, seed=0)
    assert a == carve_public_images(keys, 100, seed=0)
    assert a != carve_public_images(keys, 100, seed=1)
    assert 100 <= len(a) < 103 and len(set(a)) == len(a)
    public = {keys[i] for i in a}
    assert all(keys[i] not in public for i in set(range(1000)) - set(a))
    with pytest.raises(ValueError, match='num_samples'):
        carve_public_images(keys[:10], 10, seed=0)


def test_public_set_id_names_the_images_not_their_folder():
    a = public_set_id(['/x/images/1.jpg', '/x/images/2.jpg'])
    assert a == public_set_id(['/y/2.jpg', '/y/1.jpg', '/y/1.jpg'])
    assert a != public_set_id(['/x/images/1.jpg', '/x/images/3.jpg'])


def test_a_disjoint_public_set_is_accepted(synthetic_mpii):
    check_disjoint(_dataset(synthetic_mpii, 'val'),
                   _dataset(synthetic_mpii, 'train'))


def test_overlap_with_the_private_set_is_refused(synthetic_mpii):
    private = _dataset(synthetic_mpii, 'train')
    public = _dataset(synthetic_mpii, 'train')
    assert len(shared_images(public, private)) == len(public)
    with pytest.raises(NotPrivateError, match='share no image'):
        check_disjoint(public, private)


def test_a_shared_image_is_refused_whatever_the_boxes(synthetic_mpii,
                                                      tmp_path):
    # One private image, annotated again with its box moved by one pixel.
    with open(osp.join(synthetic_mpii, 'annotations',
                       'mpii_train.json')) as f:
        record = json.load(f)[5]
    record['center'] = [record['center'][0] + 1, record['center'][1]]
    ann = tmp_path / 'moved.json'
    ann.write_text(json.dumps([record]))
    public = _dataset(synthetic_mpii, ann_file=str(ann))
    private = _dataset(synthetic_mpii, 'train')
    with pytest.raises(NotPrivateError, match=record['image']):
        check_disjoint(public, private)


def test_a_copy_of_a_private_image_at_another_path_is_refused(
        synthetic_mpii, tmp_path):
    # The same photograph under another folder and name: compared by the
    # bytes of the file, not by its path.
    import shutil
    with open(osp.join(synthetic_mpii, 'annotations',
                       'mpii_train.json')) as f:
        record = json.load(f)[7]
    os_images = tmp_path / 'copies'
    os_images.mkdir()
    shutil.copy(osp.join(synthetic_mpii, 'images', record['image']),
                os_images / '999999999.jpg')
    record['image'] = '999999999.jpg'
    ann = tmp_path / 'copies.json'
    ann.write_text(json.dumps([record]))
    init_default_scope('mmpose')
    cfg = copy.deepcopy(Config.fromfile(TINY_CONFIG).train_dataloader.dataset)
    cfg.update(data_root=str(tmp_path) + '/', ann_file=str(ann),
               data_prefix=dict(img='copies/'))
    public = DATASETS.build(cfg)
    private = _dataset(synthetic_mpii, 'train')
    with pytest.raises(NotPrivateError, match='999999999.jpg'):
        check_disjoint(public, private)
