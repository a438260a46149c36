"""Static micro-batch shapes: every micro-batch has exactly P samples.

``privacy.physical_batch_size = P`` cuts a Poisson batch into chunks of P
(never splitting a privacy unit) and pads a short chunk with a fixed public
dummy crop: an all-zero image whose labels, targets and weights are all
zero, one privacy unit per copy. The engines multiply the dummies' clip
factors by 0 (``ClippingEngine.clipped_sum(..., padded=k)``), so padding
adds exactly nothing; the divisor stays the public expected batch, and the
number of chunks per step still follows the Poisson draw. A fixed shape is
what lets a compiled or graphed step be replayed (no re-tracing per batch
size) and bounds a step's memory by P.
"""
import copy
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.structures import BaseDataElement

#: Metainfo keys that name a record; the dummy names none.
RECORD_KEYS = ('img_path', 'img_id', 'id', 'ann_id', 'image_file',
               'dp_unit')


def _zeros(value):
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    if isinstance(value, np.ndarray):
        return np.zeros_like(value)
    if isinstance(value, BaseDataElement):
        return zero_element(value)
    if isinstance(value, (list, tuple)):  # MSPN's multi-level targets
        return type(value)(_zeros(v) for v in value)
    return value


def zero_element(element: BaseDataElement) -> BaseDataElement:
    """A copy of ``element`` with every tensor and array field (labels,
    heatmaps, keypoints, weights, boxes; nested elements too) zero and no
    record name in its metainfo."""
    out = element.new()
    for key in list(out.keys()):
        out.set_field(_zeros(element.get(key)), key)
    meta = {k: 'dp_padding' for k in RECORD_KEYS if k in out.metainfo}
    if meta:
        out.set_metainfo(meta)
    return out


def public_dummy(data_batch: Dict) -> Tuple[torch.Tensor, BaseDataElement]:
    """The padding sample shaped like the batch's samples: a zero image
    and zero targets (nothing of the sample it is shaped after; the shapes
    are the config's crop and codec)."""
    return (torch.zeros_like(data_batch['inputs'][0]),
            zero_element(copy.deepcopy(data_batch['data_samples'][0])))


def unit_too_large(size: int) -> ValueError:
    """The refusal of a unit with more records than ``size`` (its size is
    a statistic of private data: the message does not give it)."""
    return ValueError(
        'a privacy unit has more records than '
        f'privacy.physical_batch_size={size}: a unit is never split across '
        'micro-batches (it is clipped as one). Raise '
        'privacy.physical_batch_size to the largest unit (people per image '
        "with privacy.unit='image') or more")


def check_units_fit(units: Sequence[Sequence[int]], size: int) -> None:
    """Refuse, before any step, a dataset with a unit (its record indices)
    larger than ``size``."""
    if any(len(unit) > size for unit in units):
        raise unit_too_large(size)


def pad_micro_batch(micro: Dict, units: List[int], size: int,
                    dummy: Tuple[torch.Tensor, BaseDataElement]
                    ) -> Tuple[Dict, List[int], int]:
    """``(micro-batch of exactly size samples, unit ids, padded)``: the
    last ``padded`` samples are copies of ``dummy``, one unit each."""
    real = len(units)
    if real > size:
        raise unit_too_large(size)
    padded = size - real
    if not padded:
        return micro, units, 0
    image, sample = dummy
    first = max(units) + 1
    out = dict(micro)
    out['inputs'] = list(micro['inputs']) + [image] * padded
    out['data_samples'] = list(micro['data_samples']) + [
        copy.deepcopy(sample) for _ in range(padded)]
    return out, list(units) + list(range(first, first + padded)), padded
