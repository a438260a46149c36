# Feature DP mixin (use like dp_sgd.py): only the sharp image is protected; a
# strong Gaussian blur of each crop is public and its loss gradient (on a batch
# drawn independently of the private Poisson batch) is added unclipped and
# un-noised with weight lambda. That loss also uses every training record's
# keypoint labels, visibility and box: feature DP treats them as PUBLIC, and
# refuses to start unless labels_are_public=True says so.
_base_ = ['./dp_sgd.py']
privacy = dict(
    public_features=dict(
        transform=dict(type='PublicFeatureBlur', kernel_size=25, sigma=10),
        weight=1.0,
        batch_size=None,  # default: train_dataloader.batch_size
        labels_are_public=True,  # the pose labels are not protected
    ))
