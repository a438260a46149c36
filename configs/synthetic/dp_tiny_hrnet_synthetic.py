# DP-SGD on the laptop-sized setting of tiny_hrnet_synthetic.py: expected
# batch 64, C = 0.1, 8 epochs, target epsilon 8. Used by the README quick start
# (2048 generated training records: q = 1/32, 256 steps) and, with a smaller
# batch and fewer epochs, by the tests.
_base_ = ['./tiny_hrnet_synthetic.py', '../_base_/dp_sgd.py']

privacy = dict(target_epsilon=8.0, max_grad_norm=0.1)
train_dataloader = dict(batch_size=64)
train_cfg = dict(max_epochs=8, val_interval=8)
default_hooks = dict(checkpoint=dict(interval=4))
