"""MPII PCKh with per-joint-group values at both thresholds (METRICS)."""
from typing import Dict

import numpy as np
from mmpose.evaluation.functional import keypoint_pck_accuracy
from mmpose.evaluation.metrics import MpiiPCKAccuracy
from mmpose.registry import METRICS

#: MPII joint indices of each reported group (pelvis and thorax excluded).
JOINT_GROUPS = {
    'Head': (9, ), 'Shoulder': (12, 13), 'Elbow': (11, 14),
    'Wrist': (10, 15), 'Hip': (2, 3), 'Knee': (1, 4), 'Ankle': (0, 5)
}


@METRICS.register_module()
class MpiiPCKhAccuracy(MpiiPCKAccuracy):
    """``MpiiPCKAccuracy`` plus ``'<Group> PCK@0.1'`` for each joint group.

    The @0.5 values (``'Head PCK'`` ... ``'PCK'``) and the mean ``'PCK@0.1'``
    are MMPose's own; all are head-normalised (PCKh), in percent.
    """

    def __init__(self, norm_item='head', **kwargs):
        super().__init__(norm_item=norm_item, **kwargs)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        pred = np.concatenate([r['pred_coords'] for r in results]) + 1.0
        gt = np.concatenate([r['gt_coords'] for r in results])
        mask = np.concatenate([r['mask'] for r in results])
        head = np.concatenate([r['head_size'] for r in results])
        pck, _, _ = keypoint_pck_accuracy(pred, gt, mask, 0.1, head)
        for name, joints in JOINT_GROUPS.items():
            metrics[f'{name} PCK@0.1'] = float(100. * np.mean(pck[list(joints)]))
        return metrics
