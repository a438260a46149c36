# Hybrid feature-projective DP on the laptop-sized setting.
_base_ = ['./dp_tiny_hrnet_synthetic.py']
privacy = dict(
    public_data=dict(num_samples=32, seed=0),
    projection=dict(rank=32, interval=20, dtype='float32'),
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=7, sigma=2.5),
        weight=0.1,
        labels_are_public=True))  # feature DP: pose labels are public
