"""COCO as well as MPII: generated COCO data through tools/train.py and
tools/test.py (COCO AP), and the real photographs of shared/data/real_pose
(COCO and OCHuman, several people per image) through a stock COCO config
with the mixin, one image one unit, exported to stock MMPose."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import ROOT
from .test_export_e2e import HERE, _private_keypoints, _stock_env
from .test_train_test_e2e import _run

REAL = osp.join(osp.dirname(ROOT), 'shared', 'data', 'real_pose')
TINY_COCO = osp.join(ROOT, 'configs', 'synthetic',
                     'dp_tiny_hrnet_coco_synthetic.py')


@pytest.fixture(scope='module')
def synthetic_coco(tmp_path_factory):
    from make_synthetic_coco import make_synthetic_coco
    out = str(tmp_path_factory.mktemp('synthetic_coco'))
    make_synthetic_coco(out, num_train=24, num_val=8, seed=0)
    return out


def _tiny_coco_config(tmp_path, data):
    from mmengine.config import Config
    cfg = Config.fromfile(TINY_COCO)
    root = data + '/'
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.bbox_file':
        root + 'person_detection_results/val_detections.json',
        'test_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.bbox_file':
        root + 'person_detection_results/val_detections.json',
        'val_evaluator.ann_file': root + 'annotations/'
        'person_keypoints_val.json',
        'test_evaluator.ann_file': root + 'annotations/'
        'person_keypoints_val.json',
        'train_dataloader.batch_size': 6, 'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'visualizer.vis_backends': [dict(type='LocalVisBackend')]})
    cfg.custom_imports = dict(imports=['mmpose_dp'],
                              allow_failed_imports=False)
    path = str(tmp_path / 'coco.py')
    cfg.dump(path)
    return path


def test_a_generated_coco_set_trains_privately_and_reports_ap(
        tmp_path, synthetic_coco):
    cfg = _tiny_coco_config(tmp_path, synthetic_coco)
    with open(osp.join(synthetic_coco, 'annotations',
                       'person_keypoints_train.json')) as f:
        records = len(json.load(f)['annotations'])
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    log = proc.stdout + proc.stderr
    # The unit is the image: N_private counts the 24 images, not records.
    assert f'N_private=24 images ({records} records)' in log
    out = tmp_path / 'metrics.json'
    test = _run('tools/test.py', cfg, str(tmp_path / 'w' / 'epoch_1.pth'),
                '--work-dir', str(tmp_path / 't'), '--out', str(out))
    metrics = json.loads(out.read_text())
    assert {'coco/AP', 'coco/AP .5', 'coco/AR'} <= set(metrics)
    assert 'Average Precision' in test.stdout + test.stderr


def test_the_ready_coco_configs_become_dp_runs():
    from mmengine.config import Config

    from mmpose_dp.engine import apply_privacy
    for method in ('dp', 'pdp', 'fdp', 'hybrid'):
        cfg = apply_privacy(Config.fromfile(
            osp.join(ROOT, 'configs', f'{method}_hrnet_coco.py')))
        assert cfg.train_dataloader.dataset.type == 'CocoDataset'
        assert cfg.train_dataloader.batch_sampler.type == \
            'PoissonBatchSampler'
        assert cfg.model.backbone.norm_cfg.type == 'GN'
        assert cfg.val_evaluator.type == 'CocoMetric'


def _real_config(tmp_path, **privacy):
    """The stock COCO HRNet-W32 config with the mixin on the real COCO and
    OCHuman photographs (7 images, 17 people with keypoints)."""
    text = f"""_base_ = ['mmpose::body_2d_keypoint/topdown_heatmap/coco/'
          'td-hm_hrnet-w32_8xb64-210e_coco-256x192.py',
          '{ROOT}/configs/_base_/dp_sgd.py']
real = '{REAL}/'
model = dict(backbone=dict(init_cfg=None))
privacy = dict(target_epsilon=8.0, max_grad_norm=1.0, unit='image',
               **{privacy!r})
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='ConcatDataset',
                 ignore_keys=['dataset_name', 'CLASSES'], datasets=[
        dict(type='CocoDataset', data_root=real + 'coco/',
             ann_file='test_coco.json', data_prefix=dict(img=''),
             pipeline={{{{_base_.train_pipeline}}}}),
        dict(type='OCHumanDataset', data_root=real + 'ochuman/',
             ann_file='test_ochuman.json', data_prefix=dict(img=''),
             pipeline={{{{_base_.train_pipeline}}}})]))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=real + 'coco/', ann_file='test_coco.json',
                 bbox_file=real + 'coco/test_coco_det_AP_H_56.json',
                 data_prefix=dict(img='')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=real + 'coco/test_coco.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, save_best=None))
visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
"""
    path = tmp_path / 'real.py'
    path.write_text(text)
    return str(path)


def test_the_people_of_a_real_photograph_are_one_unit():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS

    from mmpose_dp.datasets import PoissonBatchSampler
    import tempfile
    init_default_scope('mmpose')
    cfg = Config.fromfile(_real_config(__import__('pathlib').Path(
        tempfile.mkdtemp())))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    images = [dataset.get_data_info(i)['img_path']
              for i in range(len(dataset))]
    sampler = PoissonBatchSampler(dataset, batch_size=2, seed=0)
    assert sampler.num_private == len(set(images)) == 7
    assert len(images) == 17 > 7  # several people per image
    for unit in sampler.units:
        assert len({images[i] for i in unit}) == 1
    for epoch in range(20):
        for batch in sampler.global_batches(epoch):
            for i in batch:  # every person of a drawn image is drawn
                assert {j for j, p in enumerate(images)
                        if p == images[i]} <= set(batch)


@pytest.mark.parametrize('method', ['dp-sgd', 'hybrid'])
def test_real_photographs_train_privately_and_export(tmp_path, method):
    hybrid = dict(
        public_data=dict(num_samples=1, seed=0),
        projection=dict(rank=2, interval=5, dtype='float32'),
        public_features=dict(
            transform=dict(type='PublicFeatureBlur', kernel_size=25,
                           sigma=10),
            weight=0.1, labels_are_public=True))
    cfg = _real_config(tmp_path, **(hybrid if method == 'hybrid' else {}))
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    log = proc.stdout + proc.stderr
    assert 'N_private=' in log and 'images (' in log
    ckpt = str(tmp_path / 'w' / 'epoch_1.pth')
    test = _run('tools/test.py', cfg, ckpt, '--work-dir',
                str(tmp_path / 't'), '--out', str(tmp_path / 'm.json'))
    assert 'coco/AP' in test.stdout + test.stderr
    assert 'coco/AP' in json.loads((tmp_path / 'm.json').read_text())
    if method != 'dp-sgd':
        return
    export = tmp_path / 'export'
    out = _run('tools/export_private_model.py', cfg, ckpt, '--out',
               str(export))
    assert 'stock MMPose config' in out.stdout
    with open(osp.join(REAL, 'coco', 'test_coco.json')) as f:
        coco = json.load(f)
    names = {im['id']: im['file_name'] for im in coco['images']}
    boxes = {}
    for ann in coco['annotations'][:4]:
        x, y, w, h = ann['bbox']
        boxes.setdefault(osp.join(REAL, 'coco', names[ann['image_id']]),
                         []).append([x, y, x + w, y + h])
    stock = subprocess.run(
        [sys.executable, osp.join(HERE, 'stock_mmpose_inference.py'),
         str(export / 'config.py'), str(export / 'model.pth'),
         json.dumps(boxes)],
        capture_output=True, text=True, cwd=str(tmp_path), env=_stock_env())
    assert stock.returncode == 0, stock.stderr[-3000:]
    result = json.loads(stock.stdout.strip().splitlines()[-1])
    assert result['mmpose_dp'] == []
    want = _private_keypoints(cfg, ckpt, boxes)
    for path in want:
        assert np.abs(np.asarray(result['keypoints'][path]) -
                      np.asarray(want[path])).max() <= 1e-3
