import filecmp
import json
import os

import numpy as np
from scipy.io import loadmat

from make_synthetic_mpii import make_synthetic_mpii


def test_layout_and_conventions(tmp_path):
    make_synthetic_mpii(str(tmp_path), num_train=5, num_val=3, seed=1,
                        size=(96, 80))
    train = json.load(open(tmp_path / 'annotations' / 'mpii_train.json'))
    val = json.load(open(tmp_path / 'annotations' / 'mpii_val.json'))
    assert len(train) == 5 and len(val) == 3
    names = [a['image'] for a in train + val]
    assert all(n[:-4].isdigit() and n.endswith('.jpg') for n in names)
    assert len(set(int(n[:-4]) for n in names)) == 8  # unique numeric ids
    for a in train + val:
        assert os.path.exists(tmp_path / 'images' / a['image'])
        joints = np.array(a['joints'])
        assert joints.shape == (16, 2) and a['joints_vis'] == [1] * 16
        # 1-based MATLAB coordinates inside the 96x80 image.
        assert (joints >= 1).all() and (joints[:, 0] <= 96).all()
        assert (joints[:, 1] <= 80).all()
    boxes = loadmat(tmp_path / 'annotations' / 'mpii_gt_val.mat')
    assert boxes['headboxes_src'].shape == (2, 2, 3)


def test_deterministic_per_seed(tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        make_synthetic_mpii(str(tmp_path / name), 4, 2, seed=seed)
    same = filecmp.dircmp(tmp_path / 'a' / 'images', tmp_path / 'b' /
                          'images')
    assert not same.diff_files and not same.left_only
    assert (tmp_path / 'a' / 'annotations' / 'mpii_train.json').read_text() \
        == (tmp_path / 'b' / 'annotations' / 'mpii_train.json').read_text()
    assert (tmp_path / 'a' / 'annotations' / 'mpii_train.json').read_text() \
        != (tmp_path / 'c' / 'annotations' / 'mpii_train.json').read_text()
