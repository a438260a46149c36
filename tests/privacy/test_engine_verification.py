"""An engine is used only where it matches per-sample autograd: explicit
engines refuse a model they cannot do exactly, ``auto`` falls back."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmpose_dp.privacy import NotPrivateError
from mmpose_dp.privacy.engines import TensorBatchLoss, build_engine

from .test_engines import _reference

LOSS = TensorBatchLoss(lambda net, x, y: ((net(x) - y)**2).sum(1).mean())
C = 0.05


class _BatchMixing(nn.Module):
    """Centres features over the batch: each output depends on every
    sample, and there are no running statistics to catch."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0))


class _Tied(nn.Module):
    """One Parameter in two layers."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
        self.c = nn.Linear(4, 4)
        self.c.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.c(torch.tanh(self.a(x)))))


class _Attention(nn.Module):
    """nn.MultiheadAttention uses out_proj's weight through F.*."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):  # [B, 3, 4]
        return self.head(self.attn(x, x, x)[0].mean(1))


class _ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward and an extra parameter."""

    def __init__(self, *args):
        super().__init__(*args)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


class _Subclassed(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.head = nn.Linear(2 * 5 * 3, 2)

    def forward(self, x):  # [B, 2, 5, 3]
        return self.head(torch.tanh(self.layer(x)).flatten(1))


def _conv_ws():
    from mmcv.cnn import ConvWS2d
    return _Subclassed(ConvWS2d(2, 2, 3, padding=1))


def _layer_norm_2d():
    # W (3) != C (2): a LayerNorm over channels that the fast engine's
    # LayerNorm rule (last dims) would crash on or get wrong.
    from mmpretrain.models.utils import LayerNorm2d
    return _Subclassed(LayerNorm2d(2))


def _attention_out_proj_only():
    # Only out_proj (a Linear subclass) trainable: its weight is used
    # through F.multi_head_attention_forward, so no Linear hook ever fires.
    model = _Attention()
    model.attn.in_proj_weight.requires_grad_(False)
    model.attn.in_proj_bias.requires_grad_(False)
    return model


def _scaled_linear():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = _ScaledLinear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))
    return Net()


MODELS = {
    'batch_mixing': (_BatchMixing, (4, )),
    'tied': (_Tied, (4, )),
    'attention': (_Attention, (3, 4)),
    'attention_out_proj': (_attention_out_proj_only, (3, 4)),
    'conv_ws': (_conv_ws, (2, 5, 3)),
    'layer_norm_2d': (_layer_norm_2d, (2, 5, 3)),
    'scaled_linear': (_scaled_linear, (4, )),
}


def _model_and_batch(name, n=6):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory()
    g = torch.Generator().manual_seed(1)
    return model, (torch.randn(n, *shape, generator=g),
                   torch.randn(n, 2, generator=g))


def _close(got, want):
    diff = sum(float((g - w).pow(2).sum()) for g, w in zip(got, want))**0.5
    size = sum(float(w.pow(2).sum()) for w in want)**0.5
    return diff <= 1e-5 * max(size, 1e-12)


@pytest.mark.parametrize('name', list(MODELS))
def test_auto_falls_back_to_an_engine_that_matches_per_sample_autograd(
        name):
    model, batch = _model_and_batch(name)
    units = [0, 0, 1, 2, 3, 3]
    engine = build_engine('auto', model, LOSS, 'mean')
    summed, _ = engine.clipped_sum(batch, units, C)
    assert _close(summed, _reference(model, batch, units, C)), engine.report
    assert engine.chosen.name != 'fast', engine.report
    assert engine.report[0].startswith('fast: ')
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize('name', list(MODELS))
@pytest.mark.parametrize('engine', ['fast', 'hooks', 'vmap'])
def test_an_explicit_engine_is_exact_or_refuses(name, engine):
    model, batch = _model_and_batch(name)
    try:
        summed, _ = build_engine(engine, model, LOSS, 'mean').clipped_sum(
            batch, list(range(6)), C)
    except NotPrivateError as err:
        assert engine != 'vmap', err
        return
    assert engine != 'fast'  # refuses every one of these models
    if name == 'batch_mixing':  # hooks see the batch: never exact here
        assert engine == 'vmap'
    assert _close(summed, _reference(model, batch, list(range(6)), C))


def test_removing_a_sample_of_a_batch_mixing_model_moves_the_sum_by_at_most_c():
    # Sensitivity of what auto releases: one unit out, at most C.
    model, batch = _model_and_batch('batch_mixing')
    engine = build_engine('auto', model, LOSS, 'mean')
    full, _ = engine.clipped_sum(batch, list(range(6)), C)
    rest, _ = engine.clipped_sum(tuple(t[1:] for t in batch),
                                 list(range(5)), C)
    change = sum(float((a - b).pow(2).sum()) for a, b in zip(full, rest))
    assert change**0.5 <= C * (1 + 1e-5)


def test_the_engine_choice_and_its_log_see_no_private_value():
    # The check runs on a random probe batch: the report names neither the
    # micro-batch's size nor its losses.
    from .test_engines import _Aliasing, _FoldsJoints, _data
    for model in (_FoldsJoints(), _Aliasing()):
        batch = _data(model, n=7)
        own = f'{float(LOSS.loss(model, batch)):.6g}'
        engine = build_engine('auto', model, LOSS, 'mean')
        engine.clipped_sum(batch, list(range(7)), C)
        report = ' '.join(engine.report)
        assert ' 7 ' not in report and '(7' not in report and own not in report


def test_when_no_engine_is_exact_auto_names_every_reason():
    from mmpose_dp.privacy.engines.auto import AutoEngine

    def refusing(reason, error=NotPrivateError):
        def factory(model, batch_loss, loss_reduction):
            raise error(reason)
        factory.name = reason.split()[0]
        return factory

    auto = AutoEngine(_Tied(), LOSS, 'mean', [
        refusing('fast cannot'), refusing('hooks crashed', RuntimeError),
        refusing('vmap differs')])
    x, y = torch.randn(3, 4), torch.randn(3, 2)
    with pytest.raises(NotPrivateError) as err:
        auto.clipped_sum((x, y), [0, 1, 2], C)
    message = str(err.value)
    for words in ('fast: fast cannot', 'hooks: RuntimeError: hooks crashed',
                  'vmap: vmap differs'):
        assert words in message
