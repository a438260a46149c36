# Hybrid feature-projective DP on the paper's model (see
# dp_tinyvit_simcc_mpii.py): projection as in PDP, public features with
# lambda 0.1.
_base_ = ['./dp_tinyvit_simcc_mpii.py']
privacy = dict(
    public_data=dict(num_samples=100, seed=0),
    projection=dict(rank=100, interval=50, dtype='bfloat16'),
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=25, sigma=10),
        weight=0.1,
        labels_are_public=True))  # feature DP: pose labels are public
