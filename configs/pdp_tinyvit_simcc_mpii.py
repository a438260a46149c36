# Projected DP-SGD on the paper's model (see dp_tinyvit_simcc_mpii.py):
# 100 public records (whole images), rank 100, refreshed every 50 steps.
_base_ = ['./dp_tinyvit_simcc_mpii.py']
privacy = dict(
    public_data=dict(num_samples=100, seed=0),
    projection=dict(rank=100, interval=50, dtype='bfloat16'))
