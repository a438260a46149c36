# The tiny MSPN setting with an RSN backbone (residual steps), as MMPose's
# td-hm_rsn18 COCO config pairs it with the same multi-level MSPN head.
_base_ = ['./dp_tiny_mspn_synthetic.py']

model = dict(
    backbone=dict(_delete_=True, type='RSN', unit_channels=16, num_stages=1,
                  num_units=4, num_blocks=[1, 1, 1, 1], num_steps=4,
                  expand_times=4,
                  norm_cfg=dict(type='BN')))
