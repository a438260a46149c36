"""PerSampleGradients: one contribution per sample, and the private forward
changes nothing outside itself."""
import threading

import pytest
import torch
from torch import nn

from mmpose_dp.privacy import (NotPrivateError, PerSampleGradients,
                               out_of_place_adds)


class _FoldsJoints(nn.Module):
    """Treats each of k joints as a sample: ``x.view(B * k, d)`` before a
    Linear (as windowed attention folds windows into the batch)."""

    def __init__(self, k=4, d=3):
        super().__init__()
        self.k, self.d = k, d
        self.embed = nn.Linear(d, d)
        self.head = nn.Linear(d, 1)

    def forward(self, x):  # x: [B, k, d]
        folded = self.embed(x).reshape(-1, self.d)  # [B * k, d]
        return self.head(folded).reshape(x.shape[0], self.k).sum(1)


def _per_sample(model, batch=5):
    per_sample = PerSampleGradients(model, 'sum')
    x = torch.randn(batch, model.k, model.d)
    with per_sample.private_forward():
        out = model(x)
    out.sum().backward()
    return per_sample, batch


def test_folded_batch_dimension_is_refused_with_the_module_named():
    model = _FoldsJoints()
    model.embed.requires_grad_(False)  # every trainable layer sees B * k
    per_sample, batch = _per_sample(model)
    with pytest.raises(NotPrivateError, match=r'head\.weight \(20 rows\)'):
        per_sample.pop(batch)
    assert not per_sample.attached


def test_folded_batch_dimension_with_trainable_layers_is_refused_too():
    per_sample, batch = _per_sample(_FoldsJoints())
    with pytest.raises(NotPrivateError, match='fold'):
        per_sample.pop(batch)


def test_one_row_per_sample_passes():
    per_sample = PerSampleGradients(nn.Linear(3, 1), 'sum')
    x = torch.randn(6, 3)
    with per_sample.private_forward():
        out = per_sample.model(x)
    out.sum().backward()
    grads = per_sample.pop(6)
    assert [g.shape[0] for g in grads] == [6, 6]


def test_in_place_add_is_out_of_place_only_in_the_private_thread():
    seen = {}

    def other_thread():
        t = torch.zeros(1)
        alias = t
        t += 1  # must stay in place here
        seen['alias'] = alias.item()

    t = torch.zeros(1)
    alias = t
    with out_of_place_adds():
        t += 1  # out of place inside the private forward
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert alias.item() == 0 and t.item() == 1
    assert seen['alias'] == 1
    u = torch.zeros(1)
    alias_u = u
    u += 1  # and in place again after it
    assert alias_u.item() == 1
