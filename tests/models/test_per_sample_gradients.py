"""Per-sample gradients of real MMPose models equal micro-batched ones."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from mmpose_dp.models import detect_loss_reduction
from mmpose_dp.privacy import PerSampleGradients, disable_inplace_activations

from ..conftest import build_tiny_pose


def _build(kind, data_root):
    """The model and a batch of 5, in float64: batched and single-sample
    convolutions sum in different orders, and in float32 that can break a
    max-pooling tie the other way on flat synthetic backgrounds."""
    model, dataset = build_tiny_pose(kind, data_root)
    batch = pseudo_collate([dataset[i] for i in range(5)])
    data = model.data_preprocessor(batch, training=True)
    model.double()
    data['inputs'] = data['inputs'].double()
    for sample in data['data_samples']:
        for name in ('gt_fields', 'gt_instance_labels'):
            if name not in sample:
                continue
            fields = sample.get(name)
            for key in list(fields.keys()):
                value = fields.get(key)
                if torch.is_tensor(value) and value.is_floating_point():
                    fields.set_field(value.double(), key)
    return model, data

def _loss(model, inputs, data_samples):
    losses = model.loss(inputs, data_samples)
    loss, _ = model.parse_losses(losses)
    return loss


@pytest.mark.parametrize('kind,reduction', [('hrnet', 'mean'),
                                            ('resnet', 'mean'),
                                            ('simcc', 'sum')])
def test_per_sample_equal_micro_batched(kind, reduction, synthetic_mpii):
    model, data = _build(kind, synthetic_mpii)
    assert detect_loss_reduction(model) == reduction
    disable_inplace_activations(model)
    per_sample = PerSampleGradients(model, reduction)
    with per_sample.private_forward():
        loss = _loss(model, data['inputs'], data['data_samples'])
    loss.backward()
    n = len(data['data_samples'])
    grads = per_sample.pop(n)
    assert not per_sample.attached
    assert all(g.shape[0] == n for g in grads)
    for i in range(n):
        model.zero_grad()
        _loss(model, data['inputs'][i:i + 1],
              data['data_samples'][i:i + 1]).backward()
        for p, g in zip(per_sample.params, grads):
            ref = p.grad if p.grad is not None else torch.zeros_like(p)
            scale = ref.abs().max().clamp(min=1e-8)
            assert ((g[i] - ref).abs().max() / scale) < 1e-6


def test_wrong_reduction_would_scale_gradients(synthetic_mpii):
    # The check above can fail: 'sum' on a mean-reduced loss is B times off.
    model, data = _build('hrnet', synthetic_mpii)
    disable_inplace_activations(model)
    per_sample = PerSampleGradients(model, 'sum')
    with per_sample.private_forward():
        loss = _loss(model, data['inputs'], data['data_samples'])
    loss.backward()
    wrong = per_sample.pop(len(data['data_samples']))
    model.zero_grad()
    _loss(model, data['inputs'][:1], data['data_samples'][:1]).backward()
    p, g = per_sample.params[-1], wrong[-1]
    ratio = (p.grad.norm() / g[0].norm()).item()
    assert ratio == pytest.approx(5, rel=1e-3)
