"""Shared fixtures: generated MPII-format data and tiny configs (CPU only)."""
import copy
import os
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
#: Threads a test process (and the tools it runs) may use: the cores shared
#: among pytest-xdist's workers, at most 2.
THREADS = max(1, min(2, (os.cpu_count() or 1) //
                     int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))))
torch.set_num_threads(THREADS)
os.environ['OMP_NUM_THREADS'] = str(THREADS)

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
    # The mixin imports mmpose_dp while a config file is read; a dumped
    # Config (as the tests write) carries that as custom_imports instead,
    # as DPRunner's own dump in the work dir does.
    cfg.custom_imports = dict(imports=['mmpose_dp'],
                              allow_failed_imports=False)
    cfg.merge_from_dict(options)
    return cfg


GN4 = dict(type='GN', num_groups=4)
TINY_RESNET = dict(type='ResNet', depth=18, stem_channels=16,
                   base_channels=8, norm_cfg=GN4, norm_eval=False)


def _tiny_hrnet(cfg):
    return copy.deepcopy(cfg.model)


def _tiny_resnet_heatmap(cfg):
    model = copy.deepcopy(cfg.model)
    model.backbone = TINY_RESNET
    codec = dict(type='MSRAHeatmap', input_size=(64, 64),
                 heatmap_size=(8, 8), sigma=1)
    model.head = dict(type='GNHeatmapHead', in_channels=64, out_channels=16,
                      deconv_out_channels=(16, 16),
                      deconv_kernel_sizes=(4, 4), norm_cfg=GN4,
                      loss=dict(type='KeypointMSELoss',
                                use_target_weight=True),
                      decoder=codec)
    return model, codec


def _tiny_simcc(cfg):
    model = copy.deepcopy(cfg.model)
    model.backbone = TINY_RESNET
    codec = dict(type='SimCCLabel', input_size=(64, 64), sigma=2.0,
                 simcc_split_ratio=2.0)
    model.head = dict(type='GNSimCCHead', in_channels=64, out_channels=16,
                      input_size=(64, 64), in_featuremap_size=(2, 2),
                      simcc_split_ratio=2.0, deconv_out_channels=None,
                      norm_cfg=GN4,
                      loss=dict(type='KLDiscretLoss', use_target_weight=True),
                      decoder=codec)
    return model, codec


def build_tiny_pose(kind: str, data_root: str):
    """A tiny MMPose estimator ('hrnet' heatmap, 'resnet' heatmap with a
    deconv head, or 'simcc') in train mode, and the synthetic training set
    without random flips (the same sample gives the same input twice)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS, MODELS
    init_default_scope('mmpose')
    cfg = Config.fromfile(TINY_CONFIG)
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = data_root + '/'
    if kind == 'hrnet':
        model_cfg = _tiny_hrnet(cfg)
    else:
        model_cfg, codec = (_tiny_resnet_heatmap(cfg) if kind == 'resnet'
                            else _tiny_simcc(cfg))
        for t in dataset_cfg.pipeline:
            if t['type'] == 'GenerateTarget':
                t['encoder'] = codec
    # No random transform (flip, box shift/scale/rotation: numpy's global
    # generator, whose state depends on the tests run before): the same
    # sample gives the same input in every pass and every test order.
    dataset_cfg.pipeline = [t for t in dataset_cfg.pipeline
                            if not t['type'].startswith('Random')]
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.train()
    dataset = DATASETS.build(dataset_cfg)
    return model, dataset
