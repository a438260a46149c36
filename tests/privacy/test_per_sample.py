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


def test_in_place_add_is_rewritten_only_in_the_private_thread():
    seen = {}

    def other_thread():
        t = torch.zeros(1)
        alias = t
        t += 1  # must stay in place here
        seen['alias'] = alias.item()

    model = nn.Linear(1, 1)
    per_sample = PerSampleGradients(model, 'sum')
    with per_sample.private_forward():
        out = model(torch.zeros(1, 1))
        before = out
        out += 1  # the output of a hooked module: rewritten out of place
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    per_sample.detach()
    assert out is not before and torch.equal(out, before + 1)
    assert seen['alias'] == 1
    u = torch.zeros(1)
    alias_u = u
    u += 1  # and in place again after it
    assert alias_u.item() == 1


def test_conv_on_a_channels_last_input_gets_exact_per_sample_gradients():
    # Opacus' conv grad sampler assumes a contiguous NCHW input; a permuted
    # (channels-last) one, as a ViT feature map is, gave wrong gradients.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 1))
    x = torch.randn(3, 6, 6, 3).permute(0, 3, 1, 2)
    reference = []
    for i in range(3):
        grads = torch.autograd.grad(model(x[i:i + 1]).sum(),
                                    list(model.parameters()))
        reference.append(grads)
    per_sample = PerSampleGradients(model, 'sum')
    with per_sample.private_forward():
        out = model(x)
    out.sum().backward()
    grads = per_sample.pop(3)
    for k, g in enumerate(grads):
        expected = torch.stack([r[k] for r in reference])
        assert torch.allclose(g, expected, atol=1e-5), k


def test_a_failed_attach_leaves_the_model_hookable():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    per_sample = PerSampleGradients(model, 'sum')
    with pytest.raises(NotImplementedError):
        with per_sample.private_forward():
            pass
    assert not hasattr(model, 'autograd_grad_sample_hooks')
    model[1].requires_grad_(False)
    per_sample = PerSampleGradients(model, 'sum')
    with per_sample.private_forward():  # hooks can be attached again
        model(torch.randn(2, 3)).sum().backward()
    assert per_sample.pop(2)[0].shape[0] == 2


def test_only_adds_onto_hooked_outputs_are_rewritten():
    model = nn.Linear(2, 2)
    per_sample = PerSampleGradients(model, 'sum')
    with per_sample.private_forward():
        hooked = model(torch.randn(1, 2))
        plain = torch.zeros(2)
        alias_hooked, alias_plain = hooked, plain
        hooked += 1  # would raise in place: rewritten
        plain += 1  # stays in place, aliasing intact
    assert alias_plain[0] == 1 and hooked is not alias_hooked
    per_sample.detach()
