# Projected DP-SGD for HRNet-W32 (GroupNorm) on MPII: dp_hrnet_mpii.py plus
# the settings of _base_/pdp_sgd.py (the paper's: 100 public records carved
# out of the training set, rank 100, refreshed every 50 steps).
_base_ = ['./dp_hrnet_mpii.py']
privacy = dict(
    public_data=dict(num_samples=100, seed=0),
    projection=dict(rank=100, interval=50, dtype='float32'))
