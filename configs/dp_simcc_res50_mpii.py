# DP-SGD for SimCC ResNet-50 (GroupNorm) on MPII, 256x256. KLDiscretLoss is a
# batch *sum* (heatmap MSE is a batch mean); mmpose_dp detects which.
_base_ = [
    'mmpose::body_2d_keypoint/simcc/mpii/'
    'simcc_res50_wo-deconv-8xb64-210e_mpii-256x256.py',
    './_base_/dp_sgd.py',
]

norm_cfg = dict(type='GN', num_groups=32)
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False, init_cfg=None),
    head=dict(type='GNSimCCHead', norm_cfg=norm_cfg))

privacy = dict(target_epsilon=0.8, max_grad_norm=0.1)
train_dataloader = dict(batch_size=32)
train_cfg = dict(max_epochs=25, val_interval=5)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=500, start_factor=0.001,
         by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=25, milestones=[20], gamma=0.1,
         by_epoch=True),
]
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(checkpoint=dict(save_best='PCK', rule='greater'))
val_evaluator = dict(type='MpiiPCKhAccuracy')
test_evaluator = val_evaluator
