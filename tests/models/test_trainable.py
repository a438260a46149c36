"""privacy.trainable: partial fine-tuning freezes what it does not name."""
import pytest
import torch
from torch import nn

from mmpose_dp.models import FrozenBatchNorm, select_trainable


class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
        self.stage4 = nn.Sequential(nn.Conv2d(4, 4, 3), FrozenBatchNorm(4))
        self.head = nn.Conv2d(4, 2, 1)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_patterns_select_parameters_by_name():
    model = _Net()
    counts = select_trainable(model, [r'^stage4\.', r'^head\.'])
    assert _trainable(model) == {'stage4.0.weight', 'stage4.0.bias',
                                 'stage4.1.weight', 'stage4.1.bias',
                                 'head.weight', 'head.bias'}
    assert counts['trainable'] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    assert counts['frozen'] == 3 * 4 * 9 + 4 + 4 + 4


def test_norm_layers_adds_every_normalisation_layer():
    model = _Net()
    select_trainable(model, dict(params=[r'^head\.'], norm_layers=True))
    assert _trainable(model) == {'stem.1.weight', 'stem.1.bias',
                                 'stage4.1.weight', 'stage4.1.bias',
                                 'head.weight', 'head.bias'}


def test_parameters_frozen_by_the_model_stay_frozen():
    model = _Net()
    model.head.bias.requires_grad_(False)
    select_trainable(model, [r'^head\.'])
    assert _trainable(model) == {'head.weight'}


@pytest.mark.parametrize('bad,match', [
    ([r'^neck\.'], 'match no parameter'),
    ([r'('], 'bad pattern'),
    (dict(layers=['x']), 'unknown privacy.trainable keys'),
])
def test_mistakes_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        select_trainable(_Net(), bad)


def test_frozen_layers_before_the_first_trainable_one_get_no_gradient():
    model = _Net()
    select_trainable(model, [r'^head\.'])
    out = model.head(model.stage4(model.stem(torch.randn(2, 3, 8, 8))))
    out.sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters()
               if not n.startswith('head.'))
