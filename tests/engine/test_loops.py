"""Micro-batches never split a privacy unit."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn

from mmpose_dp.engine.loops import (batch_unit_ids, check_private_forward,
                                    model_loss, split_batch)
from mmpose_dp.privacy import PerSampleGradients


def _batch(images):
    samples = [SimpleNamespace(metainfo=dict(img_path=f'/d/{i}.jpg'))
               for i in images]
    return dict(inputs=list(range(len(images))), data_samples=samples)


def test_samples_of_one_image_share_a_unit():
    batch = _batch([7, 7, 3, 9, 9, 9])
    assert batch_unit_ids(batch, 'image') == [0, 0, 1, 2, 2, 2]
    assert batch_unit_ids(batch, 'instance') == [0, 1, 2, 3, 4, 5]


def test_micro_batches_keep_units_whole():
    batch = _batch([7, 7, 3, 9, 9, 9, 4])
    units = batch_unit_ids(batch, 'image')
    micro = split_batch(batch, units, size=3)
    # [7, 7, 3] | [9, 9, 9] | [4]: no image is cut in two.
    assert [m['inputs'] for m, _ in micro] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [ids for _, ids in micro] == [[0, 0, 1], [0, 0, 0], [0]]
    assert sum(len(m['inputs']) for m, _ in micro) == 7


def test_a_unit_larger_than_the_micro_batch_is_one_micro_batch():
    batch = _batch([1, 2, 2, 2, 2])
    micro = split_batch(batch, batch_unit_ids(batch, 'image'), size=2)
    assert [m['inputs'] for m, _ in micro] == [[0], [1, 2, 3, 4]]


def test_no_size_means_one_micro_batch_and_empty_means_none():
    batch = _batch([1, 2, 1])
    (micro, ids), = split_batch(batch, batch_unit_ids(batch, 'image'), None)
    assert sorted(micro['inputs']) == [0, 1, 2] and sorted(ids) == [0, 0, 1]
    assert split_batch(dict(inputs=[], data_samples=[]), [], 4) == []


class _Residual(BaseModel):
    """``out += x`` on a hooked output, optionally read back through an
    alias (as LiteHRNet's fuse layers do with ``y = out[0]; y += ...``)."""

    def __init__(self, aliasing):
        super().__init__()
        self.aliasing = aliasing
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = [self.a(inputs)]
        y = out[0]
        y += inputs
        return dict(loss=self.b(out[0] if self.aliasing else y).pow(2).mean())


@pytest.mark.parametrize('aliasing', [False, True])
def test_a_private_forward_that_changes_the_loss_is_refused(aliasing):
    torch.manual_seed(0)
    model = _Residual(aliasing)
    batch = dict(inputs=torch.randn(4, 2))
    per_sample = PerSampleGradients(model, 'mean')
    with per_sample.private_forward():
        private = float(model_loss(model, batch))
    per_sample.detach()
    if aliasing:
        with pytest.raises(RuntimeError, match='aliasing'):
            check_private_forward(private, model, batch)
    else:
        check_private_forward(private, model, batch)
