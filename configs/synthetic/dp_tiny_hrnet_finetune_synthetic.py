# Private fine-tuning of a public model (the model-zoo route) in the laptop-
# sized setting of dp_tiny_hrnet_synthetic.py: the tiny HRNet with BatchNorm,
# pretrained without privacy on public data (scripts/quick_start.sh passes
# it as load_from), BatchNorm frozen with its public statistics, every
# parameter fine-tuned with DP-SGD at C = 0.01 (the study's best clipping
# norm for this route), AdamW 1e-3, 4 epochs of expected batch 64.
_base_ = ['./dp_tiny_hrnet_synthetic.py']

model = dict(backbone=dict(norm_cfg=dict(_delete_=True, type='BN')))
load_from = None  # the public checkpoint
privacy = dict(target_epsilon=8.0, max_grad_norm=0.01,
               batch_norm=dict(mode='freeze'))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = []
train_cfg = dict(max_epochs=4, val_interval=4)
