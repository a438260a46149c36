# The tiny HRNet of tiny_hrnet_synthetic.py with stock BatchNorm: a stand-in
# for an MMPose model-zoo checkpoint (pretrained non-privately on public data).
# A DP run that loads it freezes its BatchNorm (privacy.batch_norm='auto').
_base_ = ['./tiny_hrnet_synthetic.py']
model = dict(backbone=dict(norm_cfg=dict(_delete_=True, type='BN')))
