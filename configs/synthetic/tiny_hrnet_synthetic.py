# Non-private baseline: a tiny GroupNorm HRNet (channels 8/16/32/64) at 64x64
# on generated MPII-format data (tools/make_synthetic_mpii.py). The DP
# variant is dp_tiny_hrnet_synthetic.py.
_base_ = [
    'mmpose::body_2d_keypoint/topdown_heatmap/mpii/'
    'td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py'
]

data_root = 'data/synthetic_mpii/'
input_size = (64, 64)
codec = dict(type='MSRAHeatmap', input_size=input_size, heatmap_size=(16, 16),
             sigma=1)
norm_cfg = dict(type='GN', num_groups=4)
model = dict(
    backbone=dict(
        norm_cfg=norm_cfg,
        init_cfg=None,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                        num_blocks=(1, ), num_channels=(8, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(1, 1), num_channels=(8, 16)),
            stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                        num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
            stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                        num_blocks=(1, 1, 1, 1),
                        num_channels=(8, 16, 32, 64)))),
    head=dict(in_channels=8, decoder=codec),
    test_cfg=dict(flip_test=False))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', shift_prob=0),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs')
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='PackPoseInputs')
]
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        headbox_file=data_root + 'annotations/mpii_gt_val.mat',
        pipeline=val_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=4, val_interval=4)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=20, start_factor=0.01,
         by_epoch=False),
]
custom_hooks = []
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=2, save_best=None, max_keep_ckpts=2))
val_evaluator = dict(type='MpiiPCKhAccuracy')
test_evaluator = val_evaluator
