"""mmpose_dp: differentially private training for MMPose top-down models.

Importing the package registers its MMEngine components (DPOptimWrapper,
the privacy hooks, DPEpochBasedTrainLoop, DPRunner, PoissonBatchSampler,
dp_pseudo_collate).
"""
import os

__version__ = '0.1.0'

# albumentations (MMPose's RTMPose/CSPNeXt pipelines) checks the internet for
# a newer version on import; training machines are often offline.
os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')

from . import datasets, engine, evaluation, models, privacy  # noqa: F401,E402
