# Feature DP on the paper's model (see dp_tinyvit_simcc_mpii.py): the blurred
# crop (25x25, sigma 10) and the keypoint labels are public, lambda 1.0.
_base_ = ['./dp_tinyvit_simcc_mpii.py']
privacy = dict(
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=25, sigma=10),
        weight=1.0,
        labels_are_public=True))  # feature DP: pose labels are public
