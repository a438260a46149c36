# Projected DP-SGD mixin (use like dp_sgd.py). The noisy gradient is projected
# onto the top-k subspace of per-sample gradients of a public set; here whole
# training images carved out until 100 records are public (removed from the
# private set and from N_private). Projection is post-processing: the
# accounting is DP-SGD's.
_base_ = ['./dp_sgd.py']
privacy = dict(
    public_data=dict(num_samples=100, seed=0),
    # or: public_data=dict(dataset=dict(type='MpiiDataset', ...)), sharing
    # no image with the private set
    projection=dict(rank=100, interval=50, dtype='bfloat16'),
)
