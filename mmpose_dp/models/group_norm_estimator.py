"""A top-down estimator whose BatchNorm layers are GroupNorm, as a private
run trained it (``privacy.batch_norm='group_norm'``).

A private run from scratch replaces every BatchNorm module after the model
is built (``convert_batch_norm``), including those that no ``norm_cfg``
reaches (MMPose heads hard-code ``nn.BatchNorm2d`` in their deconvolution
stacks) and with fewer groups where the channels do not divide. An
exported config that must rebuild exactly that network without the privacy
machinery names this type: the stock ``TopdownPoseEstimator``, then the
same conversion. Only a model module (no runner, no hook, no sampler).
"""
from mmpose.models import TopdownPoseEstimator
from mmpose.registry import MODELS

from .batch_norm import convert_batch_norm


@MODELS.register_module()
class GroupNormTopdownPoseEstimator(TopdownPoseEstimator):
    """``TopdownPoseEstimator`` with every BatchNorm turned into GroupNorm
    of up to ``num_groups`` groups (the largest divisor of the channels).

    Args:
        num_groups: as ``privacy.batch_norm.num_groups`` of the run.
        Other arguments as ``TopdownPoseEstimator``.
    """

    def __init__(self, *args, num_groups: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_groups = num_groups
        convert_batch_norm(self, 'group_norm', num_groups)
