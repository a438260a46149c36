# A tiny MSPN (multi-stage, multi-level heatmaps: each sample's targets are
# lists of tensors) at 64x64 on generated MPII-format data, DP-SGD through the
# mixin: the stock COCO config with MPII data and 16 keypoints. Used by the
# neighbouring-dataset sensitivity check and the vmap target-splitting tests.
_base_ = [
    'mmpose::body_2d_keypoint/topdown_heatmap/coco/'
    'td-hm_mspn50_8xb32-210e_coco-256x192.py', '../_base_/dp_sgd.py'
]

data_root = 'data/synthetic_mpii/'
input_size = (64, 64)
codec = [
    dict(type='MegviiHeatmap', input_size=input_size, heatmap_size=(16, 16),
         kernel_size=k) for k in (7, 5, 5, 3)
]
model = dict(
    backbone=dict(unit_channels=16,
                  num_blocks=[1, 1, 1, 1], init_cfg=None),
    head=dict(out_shape=(16, 16), unit_channels=16, out_channels=16,
              decoder=codec[-1]),
    test_cfg=dict(flip_test=False))
privacy = dict(target_epsilon=8.0, max_grad_norm=0.1)

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateTarget', multilevel=True, encoder=codec),
    dict(type='PackPoseInputs')
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='PackPoseInputs')
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(
        type='MpiiDataset', data_root=data_root,
        ann_file='annotations/mpii_train.json',
        data_prefix=dict(img='images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(
        type='MpiiDataset', data_root=data_root, bbox_file=None,
        ann_file='annotations/mpii_val.json',
        headbox_file=data_root + 'annotations/mpii_gt_val.mat',
        data_prefix=dict(img='images/'), pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='MpiiPCKhAccuracy')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=2, save_best=None))
visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
