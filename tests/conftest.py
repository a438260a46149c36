"""Shared fixtures: generated MPII-format data and tiny configs (CPU only)."""
import os
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_CONFIG = osp.join(ROOT, 'configs', 'synthetic',
                       'dp_tiny_hrnet_synthetic.py')


@pytest.fixture(scope='session')
def synthetic_mpii(tmp_path_factory):
    """64 train / 16 val generated images in MPII layout."""
    from make_synthetic_mpii import make_synthetic_mpii
    out = str(tmp_path_factory.mktemp('synthetic_mpii'))
    make_synthetic_mpii(out, num_train=64, num_val=16, seed=0)
    return out


def tiny_config(data_root: str, work_dir: str, config: str = TINY_CONFIG,
                **options):
    """The tiny DP config pointed at ``data_root`` with ``options`` merged."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    root = data_root.rstrip('/') + '/'
    cfg.merge_from_dict({
        'work_dir': work_dir,
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.headbox_file':
        root + 'annotations/mpii_gt_val.mat',
        'test_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.headbox_file':
        root + 'annotations/mpii_gt_val.mat',
        'visualizer.vis_backends': [dict(type='LocalVisBackend')],
    })
    cfg.merge_from_dict(options)
    return cfg
