# Hybrid feature-projective DP for HRNet-W32 (GroupNorm) on COCO:
# dp_hrnet_coco.py plus the settings of _base_/hybrid_sgd.py (projection as
# in PDP, public features with lambda 0.1).
_base_ = ['./dp_hrnet_coco.py']
privacy = dict(
    # Micro-batches of 8 and G in bfloat16 keep a step under 20 GB (see
    # docs/reports/benchmarks.md); the noise is still added once per step.
    max_physical_batch_size=8,
    public_data=dict(num_samples=100, seed=0),
    projection=dict(rank=100, interval=50, dtype='bfloat16'),
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=25, sigma=10),
        weight=0.1,
        labels_are_public=True))  # feature DP: pose labels are public
