# The paper's recipe on HRNet-W32: private *partial fine-tuning* of a pose
# model pretrained on public data, with the stock MMPose config and only the
# DP mixin. BatchNorm is frozen with the statistics of the loaded weights (no
# GroupNorm), the last stage + every norm layer + the head are trained, the
# rest is frozen (excluded from clipping and noise).
#
# load_from: a public pretrained checkpoint, downloaded beforehand (this
# machine may be offline), e.g. MMPose's COCO HRNet-W32
# (td-hm_hrnet-w32_8xb64-210e_coco-256x192 in the MMPose model zoo). Its
# 17-keypoint head does not fit MPII's 16: those layers are re-initialised
# and the log names them.
_base_ = [
    'mmpose::body_2d_keypoint/topdown_heatmap/mpii/'
    'td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py',
    './_base_/dp_sgd.py',
]
load_from = 'checkpoints/td-hm_hrnet-w32_8xb64-210e_coco-256x192.pth'
model = dict(backbone=dict(init_cfg=None))  # weights come from load_from

privacy = dict(
    target_epsilon=0.8,
    max_grad_norm=0.01,
    batch_norm=dict(mode='freeze'),
    trainable=dict(
        params=[r'^backbone\.transition3\.', r'^backbone\.stage4\.',
                r'^head\.'],
        norm_layers=True))

train_dataloader = dict(batch_size=32)
train_cfg = dict(max_epochs=25, val_interval=5)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=25, milestones=[20], gamma=0.1,
         by_epoch=True),
]
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(checkpoint=dict(save_best='PCK', rule='greater'))
val_evaluator = dict(type='MpiiPCKhAccuracy')
test_evaluator = val_evaluator
