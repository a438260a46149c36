"""mmpose_dp: differentially private training for MMPose top-down models.

Importing the package registers its MMEngine components (DPOptimWrapper,
PrivacyHook, DPEpochBasedTrainLoop, DPRunner, PoissonBatchSampler,
dp_pseudo_collate).
"""
__version__ = '0.1.0'

from . import datasets, engine, evaluation, models, privacy  # noqa: F401,E402
