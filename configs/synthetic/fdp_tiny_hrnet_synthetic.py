# Feature DP on the laptop-sized setting. The blur is scaled to the 64x64 crop
# (the paper's 25x25, sigma 10 is for 256x192).
_base_ = ['./dp_tiny_hrnet_synthetic.py']
privacy = dict(
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=7, sigma=2.5),
        weight=1.0,
        labels_are_public=True))  # feature DP: pose labels are public
