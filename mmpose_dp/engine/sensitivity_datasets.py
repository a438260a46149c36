"""The neighbouring datasets of the sensitivity check: every record's
augmentations from its own seed, and a unit's records given other labels
(see :mod:`.sensitivity_check`)."""
import copy
import random
from typing import Dict, List

import numpy as np
import torch


def _base_datasets(dataset) -> List:
    inner = getattr(dataset, 'datasets', None)
    if inner is not None:
        return [d for ds in inner for d in _base_datasets(ds)]
    inner = getattr(dataset, 'dataset', None)
    return _base_datasets(inner) if inner is not None else [dataset]


def seed_augmentations(dataset, seed_base: int) -> None:
    """Every record's augmentations from its own seed."""
    for base in _base_datasets(dataset):
        prepare = base.prepare_data

        def seeded(idx, prepare=prepare, base=base):
            seed = seed_base * 1000003 + idx
            random.seed(seed)
            np.random.seed((seed_base, idx))
            torch.manual_seed(seed)
            for transform in getattr(base.pipeline, 'transforms', ()):
                # albumentations keeps generators of its own per transform
                # (MMPose's Albumentation: RTMPose, CSPNeXt); looked up at
                # each call, as PipelineSwitchHook swaps the pipeline.
                aug = getattr(transform, 'aug', None)
                if hasattr(aug, 'set_random_seed'):
                    aug.set_random_seed(seed)
            return prepare(idx)

        base.prepare_data = seeded


def _box_centre(info: Dict):
    """(1, 2) centre of a record's box: MPII records carry it, COCO records
    a ``bbox`` (x1, y1, x2, y2) that a transform turns into one later."""
    if 'bbox_center' in info:
        return info['bbox_center']
    box = info['bbox']
    return (box[:, :2] + box[:, 2:]) / 2


def replace_records(dataset, infos: List[Dict]) -> None:
    """The records ``infos`` (by image and annotation id) get other labels:
    the joints in reverse order, pulled towards the box centre."""
    from ..datasets import image_key
    targets = {(image_key(i), i.get('id')) for i in infos}
    for base in _base_datasets(dataset):
        get = base.get_data_info

        def replaced(idx, get=get):
            info = get(idx)
            if (image_key(info), info.get('id')) in targets:
                info = copy.deepcopy(info)
                centre = _box_centre(info)[:, None]
                info['keypoints'] = centre + 0.5 * (
                    info['keypoints'][:, ::-1] - centre)
                info['keypoints_visible'] = info['keypoints_visible'][:, ::-1]
            return info

        base.get_data_info = replaced
