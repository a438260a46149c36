# Hybrid feature-projective DP mixin: g = V V^T g_private_noisy
# + lambda * g_public_feature (lambda 0.1 as in the paper). As in feature DP,
# the keypoint labels, visibility and boxes of the training records are
# treated as PUBLIC (labels_are_public=True is required).
_base_ = ['./pdp_sgd.py']
privacy = dict(
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=25, sigma=10),
        weight=0.1,
        batch_size=None,
        labels_are_public=True,  # the pose labels are not protected
    ))
