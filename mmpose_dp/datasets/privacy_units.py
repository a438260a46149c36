"""Privacy units: which training records are protected together.

``'instance'``: every annotated person record is its own unit (the paper's
choice). ``'image'``: all person records of one image form one unit; they
are sampled together and their gradients are summed before clipping, so an
image makes one contribution of norm at most C, however many people it
shows (a top-down crop also shows its neighbours).

Records are tied to their image by the image's *content* (a SHA-256 of
the file bytes, :func:`image_fingerprint`), so two copies of one photograph
at different paths are one image (one unit, and never split between a
public and a private set); by ``img_id`` where no file is given. A record
is identified by its image and its annotation ``id``, so a record repeated
(``RepeatDataset``, a data set concatenated with itself) is one unit under
``'instance'`` too.
"""
import hashlib
import os
import os.path as osp
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..privacy import NotPrivateError

UNITS = ('image', 'instance')
#: (real path, size, mtime) -> content fingerprint; images are hashed once
#: per process.
_FINGERPRINTS: Dict[Tuple[str, int, int], str] = {}


def image_fingerprint(path: str) -> str:
    """``'sha256:<hex>'`` of the file's bytes, or ``'path:<real path>'``
    for a path that names no file."""
    real = osp.realpath(str(path))
    try:
        stat = os.stat(real)
    except OSError:
        return f'path:{real}'
    key = (real, stat.st_size, stat.st_mtime_ns)
    found = _FINGERPRINTS.get(key)
    if found is None:
        digest = hashlib.sha256()
        with open(real, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        found = _FINGERPRINTS[key] = f'sha256:{digest.hexdigest()}'
    return found


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise NotPrivateError(
            f"privacy.unit must be one of {UNITS}, got {unit!r}")
    return unit


def image_key(info: Dict) -> str:
    """The image of a record (a dataset's data info or a packed sample's
    metainfo), by content."""
    path = info.get('img_path')
    if path:
        return image_fingerprint(path)
    if info.get('img_id') is not None:
        return f'img_id:{info["img_id"]}'
    raise NotPrivateError(
        'a training record names neither img_path nor img_id, so records '
        'cannot be tied to their image (needed for the image as privacy '
        'unit and for whole-image public sets). Keep img_path in the '
        "dataset's records and in PackPoseInputs' meta_keys")


def record_key(info: Dict) -> str:
    """The identity of a record: its image and its annotation ``id``."""
    if info.get('id') is None:
        raise NotPrivateError(
            "privacy.unit='instance' needs each record's annotation id "
            "('id', kept by MMPose's datasets and PackPoseInputs' default "
            'meta_keys) to tell a repeated record from another one; keep '
            "'id' in meta_keys or use privacy.unit='image'")
    return f'{image_key(info)}#{info["id"]}'


def unit_key(info: Dict, unit: str) -> str:
    """The privacy unit a record belongs to."""
    return image_key(info) if unit == 'image' else record_key(info)


def _infos(dataset):
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def record_image_keys(dataset) -> List[str]:
    """The image (by content) of every record of an MMPose dataset, in
    index order."""
    return [image_key(info) for info in _infos(dataset)]


def record_unit_keys(dataset, unit: str) -> List[str]:
    """The privacy unit of every record, in index order."""
    start = time.time()
    keys = [unit_key(info, unit) for info in _infos(dataset)]
    seconds = time.time() - start
    if seconds > 5:
        from mmengine.logging import print_log
        print_log(f'[privacy] {len(keys)} records tied to their images by '
                  f'content in {seconds:.0f}s', logger='current')
    return keys


def record_image_paths(dataset) -> List[str]:
    """The image file (or id) of every record, for messages."""
    return [str(info.get('img_path') or f'img_id:{info.get("img_id")}')
            for info in _infos(dataset)]


def group_by_image(keys: Sequence[str]) -> List[np.ndarray]:
    """Record indices of each key (image or unit), keys in order of first
    appearance."""
    groups: Dict[str, List[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [np.asarray(g, dtype=np.int64) for g in groups.values()]


def unit_ids(keys: Sequence[str]) -> List[int]:
    """Unit of each sample of a batch (0, 1, ...), from their unit keys."""
    index: Dict[str, int] = {}
    return [index.setdefault(k, len(index)) for k in keys]
