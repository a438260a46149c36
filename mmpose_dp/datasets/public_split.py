"""Public/private split of the training data, by whole images.

MPII shows several people per image, and a top-down crop of one shows parts
of its neighbours. A public set therefore takes whole images: all records of
an image are on one side, and a separate public set may share no image file
with the private set, whatever its boxes.
"""
import hashlib
import os.path as osp
from typing import List, Sequence

import numpy as np

from ..privacy import NotPrivateError
from .privacy_units import (group_by_image, record_image_keys,
                            record_image_paths)


def carve_public_images(keys: Sequence[str], num_public: int,
                        seed: int) -> List[int]:
    """Record indices of whole images, drawn with ``seed`` until at least
    ``num_public`` records are public (for instance the projection set of
    PDP-SGD); they are removed from the private index set.

    Which images are public is a decision about consent, not a secret, so a
    fixed seed is fine here (unlike the Poisson sampling seed).

    Args:
        keys: the image of every training record.
        num_public: the least number of public records.
        seed: seed of the draw.
    """
    num_records = len(keys)
    if not 0 < num_public < num_records:
        raise ValueError(
            f'public_data.num_samples must be in [1, {num_records - 1}] (the '
            f'training set has {num_records} records), got {num_public}')
    images = group_by_image(keys)
    order = np.random.default_rng([int(seed), 0x9B1C]).permutation(
        len(images))
    public: List[int] = []
    for i in order:
        public.extend(images[i].tolist())
        if len(public) >= num_public:
            break
    if len(public) == num_records:
        raise ValueError(
            f'public_data.num_samples={num_public} leaves no private image')
    return sorted(public)


def public_set_id(keys: Sequence[str]) -> str:
    """A short fingerprint of a public set: the hash of its images' content
    fingerprints (file names for keys that are paths), so it survives
    moving and renaming the data.

    Stored in the privacy plan, so a resumed run can check that it uses the
    same public set (which images are public is no secret)."""
    names = sorted({k if k.startswith('sha256:') else osp.basename(k)
                    for k in keys})
    digest = hashlib.sha256('\n'.join(names).encode())
    return digest.hexdigest()[:16]


def shared_images(public, private) -> List[str]:
    """Image files of the public set whose content is also an image of a
    private record (compared by the hash of the file bytes, not by path)."""
    private_keys = set(record_image_keys(private))
    return sorted({path for path, key in zip(record_image_paths(public),
                                             record_image_keys(public))
                   if key in private_keys})


def check_disjoint(public, private, limit: int = 5) -> None:
    """Refuse a separate public set that shares any image (by content) with
    the private set."""
    shared = shared_images(public, private)
    if shared:
        raise NotPrivateError(
            f'{len(shared)} image(s) of the public set also hold private '
            f'training records (the same file content), e.g. '
            f'{shared[:limit]}. A person in a '
            'private record can appear in a public crop of the same image '
            'whatever the boxes, so public data must share no image with '
            'the private set; remove those images or use privacy.public_'
            'data=dict(num_samples=..., seed=...) to carve whole images '
            'out of the training annotations instead')
