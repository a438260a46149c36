# The paper's TinyViT-5M + SimCC (configs/dp_tinyvit_simcc_mpii.py: partial
# fine-tuning, BatchNorm frozen, engine auto -> vmap) at a reduced input,
# 128x96, on generated MPII-format data (tools/make_synthetic_mpii.py), for
# tests and laptops; the MPII config is the same model at 256x192.
_base_ = ['../dp_tinyvit_simcc_mpii.py']

data_root = 'data/synthetic_mpii/'
input_size = (96, 128)
codec = dict(type='SimCCLabel', input_size=input_size, sigma=(1.5, 1.5),
             simcc_split_ratio=2.0, normalize=False, use_dark=False)
model = dict(
    backbone=dict(img_size=(128, 96)),
    head=dict(input_size=input_size, in_featuremap_size=(3, 4),
              decoder=codec))
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
privacy = dict(target_epsilon=8.0, max_grad_norm=0.1)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root,
                 headbox_file=data_root + 'annotations/mpii_gt_val.mat',
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=1, save_best=None))
