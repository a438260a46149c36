# Projected DP-SGD on the laptop-sized setting (see dp_tiny_hrnet_synthetic.py).
_base_ = ['./dp_tiny_hrnet_synthetic.py']
privacy = dict(
    public_data=dict(num_samples=32, seed=0),
    projection=dict(rank=32, interval=20, dtype='float32'))
