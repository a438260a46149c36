"""Privacy units: which training records are protected together.

``'instance'``: every annotated person record is its own unit (the paper's
choice). ``'image'``: all person records of one image form one unit; they
are sampled together and their gradients are summed before clipping, so an
image makes one contribution of norm at most C, however many people it
shows (a top-down crop also shows its neighbours).

Records are tied to their image by the image file (``img_path``, resolved
to a real path, so two spellings of one file are one image), or by
``img_id`` where no path is given.
"""
import os.path as osp
from typing import Dict, List, Sequence

import numpy as np

from ..privacy import NotPrivateError

UNITS = ('image', 'instance')


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise NotPrivateError(
            f"privacy.unit must be one of {UNITS}, got {unit!r}")
    return unit


def image_key(info: Dict) -> str:
    """The image of a record (a dataset's data info or a packed sample's
    metainfo)."""
    path = info.get('img_path')
    if path:
        return osp.realpath(str(path))
    if info.get('img_id') is not None:
        return f'img_id:{info["img_id"]}'
    raise NotPrivateError(
        'a training record names neither img_path nor img_id, so records '
        'cannot be tied to their image (needed for the image as privacy '
        'unit and for whole-image public sets). Keep img_path in the '
        "dataset's records and in PackPoseInputs' meta_keys")


def record_image_keys(dataset) -> List[str]:
    """The image of every record of an MMPose dataset, in index order."""
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    return [image_key(dataset.get_data_info(i)) for i in range(len(dataset))]


def group_by_image(keys: Sequence[str]) -> List[np.ndarray]:
    """Record indices of each image, images in order of first appearance."""
    groups: Dict[str, List[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [np.asarray(g, dtype=np.int64) for g in groups.values()]


def unit_ids(keys: Sequence[str], unit: str) -> List[int]:
    """Unit of each sample of a batch (0, 1, ...): one per image, or one
    per record."""
    if unit == 'instance':
        return list(range(len(keys)))
    index: Dict[str, int] = {}
    return [index.setdefault(k, len(index)) for k in keys]
