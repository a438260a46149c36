"""Public/private split of the training records."""
import os.path as osp
from typing import List, Tuple

import numpy as np


def carve_public_indices(num_records: int, num_public: int,
                         seed: int) -> List[int]:
    """``num_public`` record indices chosen with ``seed``, to be treated as
    public (for instance the projection set of PDP-SGD) and removed from the
    private index set.

    Which records are public is a decision about consent, not a secret, so
    a fixed seed is fine here (unlike the Poisson sampling seed).
    """
    if not 0 < num_public < num_records:
        raise ValueError(
            f'public_data.num_samples must be in [1, {num_records - 1}] (the '
            f'training set has {num_records} records), got {num_public}')
    rng = np.random.default_rng([int(seed), 0x9B1C])
    return sorted(rng.choice(num_records, num_public, replace=False).tolist())


def record_keys(dataset) -> List[Tuple[str, Tuple[float, ...]]]:
    """(image file name, rounded box) of every record of an MMPose dataset."""
    keys = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        box = np.asarray(info.get('bbox', ())).reshape(-1)
        keys.append((osp.basename(str(info.get('img_path', ''))),
                     tuple(np.round(box, 1).tolist())))
    return keys


def overlapping_records(public, private) -> List[int]:
    """Indices of ``public`` records whose image and box also appear in
    ``private``."""
    private_keys = set(record_keys(private))
    return [i for i, k in enumerate(record_keys(public)) if k in private_keys]


def check_disjoint(public, private, limit: int = 5) -> None:
    overlap = overlapping_records(public, private)
    if overlap:
        shown = [record_keys(public)[i] for i in overlap[:limit]]
        raise ValueError(
            f'{len(overlap)} public record(s) are also in the private '
            f'training set (same image and box), e.g. {shown}. Public data '
            'must be disjoint from the private set; remove them or use '
            'privacy.public_data=dict(num_samples=..., seed=...) to carve '
            'the public set out of the training annotations instead')

