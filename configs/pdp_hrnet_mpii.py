# Projected DP-SGD for HRNet-W32 (GroupNorm) on MPII: dp_hrnet_mpii.py plus
# the settings of _base_/pdp_sgd.py (the paper's: whole training images carved
# out until 100 records are public, rank 100, refreshed every 50 steps).
_base_ = ['./dp_hrnet_mpii.py']
privacy = dict(
    # Micro-batches of 8 and G in bfloat16 keep a step under 20 GB (see
    # docs/reports/benchmarks.md); the noise is still added once per step.
    max_physical_batch_size=8,
    public_data=dict(num_samples=100, seed=0),
    projection=dict(rank=100, interval=50, dtype='bfloat16'))
