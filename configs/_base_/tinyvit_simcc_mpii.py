# The paper's model on MPII, non-private: TinyViT-5M (MMPretrain; depths
# 2/2/6/2, dims 64/128/160/320, windowed attention) with the SimCC head of
# the paper (1x1 conv to 16 keypoints, bilinear upsampling of the 8x6 map to
# 32x24, flatten, Linear to 384 x-bins and 512 y-bins, split ratio 2, KL
# loss, label sigma 3), input 256x192, AdamW 1e-3 (x0.1 at epoch 20),
# 25 epochs, batch 32. The DP variants add configs/_base_/dp_sgd.py.
#
# ImageNet weights (MMPretrain's TinyViT-5M) cannot be downloaded here: set
#   model.backbone.init_cfg = dict(type='Pretrained', prefix='backbone',
#       checkpoint='checkpoints/tinyvit-5m_in21k-distill-pre_3rdparty_in1k.pth')
# or load_from a public pose checkpoint (the paper fine-tunes from COCO).
#
# UpsampleSimCCHead and MpiiPCKhAccuracy come from mmpose_dp, imported while
# this config is read; 'mmpretrain.TinyViT' is found through MMPretrain's
# registry.
_base_ = ['mmpose::_base_/default_runtime.py']
__import__('mmpose_dp')

input_size = (192, 256)
codec = dict(type='SimCCLabel', input_size=input_size, sigma=(3.0, 3.0),
             simcc_split_ratio=2.0, normalize=False, use_dark=False)
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(type='PoseDataPreprocessor',
                           mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='mmpretrain.TinyViT', arch='5m', img_size=(256, 192),
                  window_size=[7, 7, 14, 7], out_indices=(3, ),
                  gap_before_final_norm=False, drop_path_rate=0.0,
                  init_cfg=None),
    head=dict(type='UpsampleSimCCHead', in_channels=320, out_channels=16,
              input_size=input_size, in_featuremap_size=(6, 8), upsample=4,
              simcc_split_ratio=2.0,
              loss=dict(type='KLDiscretLoss', use_target_weight=True),
              decoder=codec),
    test_cfg=dict(flip_test=False))

dataset_type = 'MpiiDataset'
data_mode = 'topdown'
data_root = 'data/mpii/'
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
    batch_size=32, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode=data_mode,
                 ann_file='annotations/mpii_train.json',
                 data_prefix=dict(img='images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode=data_mode,
                 ann_file='annotations/mpii_val.json',
                 headbox_file=data_root + 'annotations/mpii_gt_val.mat',
                 data_prefix=dict(img='images/'), test_mode=True,
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='MpiiPCKhAccuracy')
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=25, val_interval=5)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=25, milestones=[20], gamma=0.1,
         by_epoch=True),
]
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(checkpoint=dict(save_best='PCK', rule='greater'))
