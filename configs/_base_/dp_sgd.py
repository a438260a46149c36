# DP-SGD mixin: add it after an MMPose top-down config in `_base_`, e.g.
#   _base_ = ['mmpose::body_2d_keypoint/.../some_config.py',
#             'path/to/configs/_base_/dp_sgd.py']
# and switch every BatchNorm to GroupNorm (see configs/dp_hrnet_mpii.py).
# The `privacy` section is turned into the DP components (DPOptimWrapper,
# PoissonBatchSampler + dp_pseudo_collate, DPEpochBasedTrainLoop, PrivacyHook)
# by DPRunner; the work dir's dumped config shows the result.
# Import mmpose_dp while the config is read: it registers its components and
# makes Runner.from_cfg build a DPRunner (MMPose's own tools/train.py). Not
# through custom_imports, which a stock config may define already (ViTPose's
# does) while mmengine refuses a key defined in two _base_ files; DPRunner
# adds mmpose_dp to custom_imports in the config it runs and dumps.
__import__('mmpose_dp')
runner_type = 'DPRunner'
privacy = dict(
    target_epsilon=1.0,  # sigma is calibrated (PRV) for the planned steps
    delta=None,  # default 1 / (10 N_private); must be < 1 / N_private
    max_grad_norm=1.0,  # clipping norm C (flat, over all trainable params)
    unit='image',  # privacy unit: 'image' (all its people) or 'instance'
    # noise_multiplier=1.0,   # give sigma instead of calibrating it
    # max_physical_batch_size=16,  # micro-batches for large logical batches
    # physical_batch_size=16,  # ... or exactly 16 each, padded (static)
    # cuda_graphs='auto',  # with physical_batch_size on a GPU: replay
    # noise_seed=None, sampler_seed=None,  # None: secret (fixed voids DP)
    # mechanism='gaussian',  # or dict(type='banded_mf', bands=4)
    # log_private_metrics=False,  # True: un-noised loss/accuracy in the log
    # loss_reduction='mean',  # only for a loss mmpose_dp does not know
    # disjoint_from_loaded_checkpoint=False,  # load_from a DP checkpoint
)
