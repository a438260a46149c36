"""Collate that keeps empty Poisson batches (FUNCTIONS)."""
from typing import Any, Sequence

from mmengine.dataset import pseudo_collate
from mmengine.registry import FUNCTIONS


@FUNCTIONS.register_module()
def dp_pseudo_collate(data_batch: Sequence) -> Any:
    """``pseudo_collate``, except that an empty batch gives empty lists.

    mmengine's ``pseudo_collate`` fails on an empty list; DP-SGD must still
    take its noise-only step on it (skipping it would reveal that the batch
    was empty).
    """
    if len(data_batch) == 0:
        return dict(inputs=[], data_samples=[])
    return pseudo_collate(data_batch)


def is_empty_batch(data_batch: Any) -> bool:
    if isinstance(data_batch, dict):
        inputs = data_batch.get('inputs')
        return inputs is not None and len(inputs) == 0
    return len(data_batch) == 0
