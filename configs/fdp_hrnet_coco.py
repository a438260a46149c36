# Feature DP for HRNet-W32 (GroupNorm) on COCO: dp_hrnet_coco.py plus the
# settings of _base_/fdp_sgd.py (blur 25x25, sigma 10; lambda 1.0).
_base_ = ['./dp_hrnet_coco.py']
privacy = dict(
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=25, sigma=10),
        weight=1.0,
        labels_are_public=True))  # feature DP: pose labels are public
