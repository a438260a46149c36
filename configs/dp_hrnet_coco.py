# DP-SGD for HRNet-W32 (GroupNorm) on COCO, 256x192, heatmaps: the stock
# MMPose COCO config with the mixin, the paper's MPII recipe as a start
# (AdamW 1e-3, x0.1 at epoch 20, 25 epochs, expected batch 32 images,
# C = 0.1). COCO in MMPose's layout under data/coco; evaluation with the
# stock CocoMetric (AP/AR) on detected person boxes.
_base_ = [
    'mmpose::body_2d_keypoint/topdown_heatmap/coco/'
    'td-hm_hrnet-w32_8xb64-210e_coco-256x192.py',
    './_base_/dp_sgd.py',
]

norm_cfg = dict(type='GN', num_groups=32)  # W48: num_groups=16
model = dict(backbone=dict(norm_cfg=norm_cfg, init_cfg=None))

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
