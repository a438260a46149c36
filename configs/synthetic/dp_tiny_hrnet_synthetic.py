# DP-SGD on the laptop-sized setting of tiny_hrnet_synthetic.py. Used by the
# README quick start and the tests.
_base_ = ['./tiny_hrnet_synthetic.py', '../_base_/dp_sgd.py']

privacy = dict(target_epsilon=8.0, max_grad_norm=1.0)
