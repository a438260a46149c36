"""Every clipping engine returns the sum of clipped per-unit gradients of
per-sample autograd, or refuses the model."""
import pytest
import torch
from torch import nn

from mmpose_dp.privacy import NotPrivateError, clip_factors, per_sample_norms
from mmpose_dp.privacy.engines import TensorBatchLoss, build_engine

ENGINES = ['fast', 'hooks', 'vmap', 'auto']


class _Residual(nn.Module):
    """A small conv net with ``out += x`` on a normalisation output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.norm = nn.GroupNorm(1, 2)
        self.fc = nn.Linear(2 * 16, 2)

    def forward(self, x):
        out = self.norm(self.conv(x))
        out += x
        return self.fc(torch.relu(out).flatten(1))


class _FoldsJoints(nn.Module):
    """Treats 4 joints of each sample as samples (x.reshape(B * 4, d))."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):  # [B, 4, 3]
        out = self.head(self.embed(x).reshape(-1, 3))
        return out.reshape(x.shape[0], 4, 2).mean(1)


class _Aliasing(nn.Module):
    """Reads ``out[0]`` again after ``y = out[0]; y += ...``."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, x):
        out = [self.a(x)]
        y = out[0]
        y += x
        return self.b(out[0]) + y


class _Tokens(nn.Module):
    """LayerNorms over the last dim of ``[B, T, C]`` and over the last two
    of ``[B, T, H, W]``, and a GroupNorm, between Linears."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 6)
        self.ln = nn.LayerNorm(6)
        self.ln2 = nn.LayerNorm((2, 3))
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4 * 6, 2)

    def forward(self, x):  # [B, 4, 6]
        out = self.ln(self.embed(x))
        out = self.ln2(out.reshape(-1, 4, 2, 3))
        return self.fc(self.gn(out).flatten(1))


class _Pointwise(nn.Module):
    """1x1 convolutions (per-sample weight gradients as batched products):
    one instantiated (16 positions, 2 -> 16), one with a ghost norm (4
    positions, 16 -> 16)."""

    def __init__(self):
        super().__init__()
        self.widen = nn.Conv2d(2, 16, 1, bias=False)
        self.mix = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16 * 4, 2)

    def forward(self, x):  # [B, 2, 4, 4]
        out = nn.functional.avg_pool2d(torch.relu(self.widen(x)), 2)
        return self.fc(self.mix(out).flatten(1))


class _ThreeWays(nn.Module):
    """Convolutions taking each of the fast engine's ways: ``fine`` (8 x 8)
    instantiates its gradients and keeps them, ``coarse`` and ``up`` (4 x
    4) keep their inputs (fewer numbers than their gradients, and the ghost
    norm costs more) and instantiate only for the norm, ``deep`` (2 x 2)
    and ``fc`` take the ghost norm."""

    def __init__(self):
        super().__init__()
        self.fine = nn.Conv2d(2, 4, 3, padding=1)
        self.coarse = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 3, padding=1)
        self.deep = nn.Conv2d(4, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4, 2)

    def forward(self, x):  # [B, 2, 8, 8]
        out = nn.functional.avg_pool2d(torch.relu(self.fine(x)), 2)
        out = torch.relu(self.up(torch.relu(self.coarse(out))))
        out = nn.functional.avg_pool2d(out, 2)
        return self.fc(self.deep(out).flatten(1))


LOSS = TensorBatchLoss(lambda net, x, y: ((net(x) - y)**2).sum(1).mean())


def _data(model, n=6):
    g = torch.Generator().manual_seed(1)
    shape = {_Residual: (2, 4, 4), _FoldsJoints: (4, 3), _Aliasing: (2, ),
             _Tokens: (4, 6), _Pointwise: (2, 4, 4), _ThreeWays: (2, 8, 8)}
    return (torch.randn(n, *shape[type(model)], generator=g),
            torch.randn(n, 2, generator=g))


def _reference(model, batch, units, c):
    """Clipped per-unit sum from micro-batches of one (plain autograd)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(batch[0])):
        loss = LOSS.loss(model, tuple(t[i:i + 1] for t in batch))
        rows.append(torch.autograd.grad(loss, params))
    per_unit = [[sum(rows[i][k] for i, u in enumerate(units) if u == unit)
                 for k in range(len(params))] for unit in sorted(set(units))]
    stacked = [torch.stack([u[k] for u in per_unit])
               for k in range(len(params))]
    factors = clip_factors(per_sample_norms(stacked), c)
    return [torch.einsum('u,u...->...', factors, g) for g in stacked]


def _engine(name, model):
    return build_engine(name, model, LOSS, 'mean')


@pytest.mark.parametrize('engine', ENGINES)
# Any labelling is valid: not sorted, a permutation of range(B) too (the
# fast engine once took a permutation for the identity: 128 C).
@pytest.mark.parametrize('units', [[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 2, 2],
                                   [1, 0, 3, 2, 5, 4], [2, 2, 0, 1, 1, 0]])
def test_engines_give_the_clipped_sum_of_per_sample_autograd(engine, units):
    torch.manual_seed(0)
    model = _Residual()
    batch = _data(model)
    expected = _reference(model, batch, units, c=0.05)
    summed, loss = _engine(engine, model).clipped_sum(batch, units, 0.05)
    for got, want in zip(summed, expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())
    assert loss.item() == pytest.approx(LOSS.loss(model, batch).item(),
                                        rel=1e-5)


def _way(capture, a, g) -> str:
    if capture._ghost(a, g):
        return 'ghost'
    return 'inputs' if capture._keeps_inputs(a, g) else 'rows'


def _ways_taken(captures) -> dict:
    """Filled during the next pass: the way each capture's layer takes
    (ghost norm, inputs kept, or rows)."""
    ways = {}
    for capture in captures:
        capture.receive = (
            lambda a, g, state, c=capture, f=capture.receive: (
                ways.setdefault(c.module, _way(c, a, g)), f(a, g, state))[1])
    return ways


@pytest.mark.parametrize('units', [[0, 1, 2, 3, 4, 5], [2, 2, 0, 1, 1, 0]])
@pytest.mark.parametrize('model_type, ways_by_name, pointwise', [
    (_Pointwise, dict(widen='rows', mix='ghost', fc='ghost'), {'widen',
                                                               'mix'}),
    (_ThreeWays, dict(fine='rows', coarse='inputs', up='inputs',
                      deep='ghost', fc='ghost'), set()),
])
def test_each_way_of_the_fast_engine_gives_the_clipped_sum(
        model_type, ways_by_name, pointwise, units):
    # Pointwise convolutions: per-sample weight gradients as batched
    # products, with rows and with the ghost norm.
    torch.manual_seed(0)
    model = model_type()
    batch = _data(model)
    expected = _reference(model, batch, units, c=0.05)
    engine = _engine('fast', model)
    assert {name for name, m in model.named_children()
            if getattr(engine.layers[m], 'pointwise', False)} == pointwise
    engine.clipped_sum(batch, units, 0.05)  # the first-use check
    ways = _ways_taken(engine.layers.values())
    summed, _ = engine.clipped_sum(batch, units, 0.05)
    assert {name: ways[m] for name, m in model.named_children()
            } == ways_by_name
    for got, want in zip(summed, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('engine', ['fast', 'fast-batched', 'hooks', 'vmap'])
def test_norm_layers_over_any_dims_give_the_clipped_sum(engine):
    # The fast engine's norm rules sum g * x_hat over the reduced dims, as
    # a multiply-and-sum (CPU) or one batched product (GPU, forced here):
    # checked for each layout.
    torch.manual_seed(0)
    model = _Tokens()
    with torch.no_grad():  # affine parameters away from their init
        for m in (model.ln, model.ln2, model.gn):
            m.weight.normal_()
            m.bias.normal_()
    batch = _data(model)
    units = [0, 0, 1, 2, 2, 3]
    expected = _reference(model, batch, units, c=0.05)
    built = _engine(engine.split('-')[0], model)
    if engine == 'fast-batched':
        built.batched_products = True
    summed, _ = built.clipped_sum(batch, units, 0.05)
    for got, want in zip(summed, expected):
        assert torch.allclose(got, want, atol=1e-6)


def test_hooks_refuse_a_folded_batch_dimension_and_vmap_is_exact():
    torch.manual_seed(0)
    model = _FoldsJoints()
    batch = _data(model)
    with pytest.raises(NotPrivateError, match='fold'):
        _engine('hooks', model).clipped_sum(batch, list(range(6)), 0.05)
    expected = _reference(model, batch, list(range(6)), c=0.05)
    for name in ('vmap', 'auto'):
        engine = _engine(name, model)
        summed, _ = engine.clipped_sum(batch, list(range(6)), 0.05)
        for got, want in zip(summed, expected):
            assert torch.allclose(got, want, atol=1e-6)
    assert engine.chosen.name == 'vmap'
    assert [r.split(':')[0].split(' (')[0] for r in engine.report] == [
        'fast', 'hooks', 'chose vmap']
    assert all('fold' in r for r in engine.report[:2])


@pytest.mark.parametrize('engine', ['fast', 'vmap', 'auto'])
def test_hooks_refuse_a_forward_they_would_change_others_keep_it(engine):
    # `+=` must be rewritten under Opacus' module hooks, which breaks the
    # aliasing; tensor hooks (fast) and functional calls (vmap) need no
    # rewrite.
    torch.manual_seed(0)
    model = _Aliasing()
    batch = _data(model)
    with pytest.raises(NotPrivateError, match='aliasing'):
        _engine('hooks', model).clipped_sum(batch, list(range(6)), 0.05)
    summed, _ = _engine(engine, model).clipped_sum(batch, list(range(6)),
                                                   0.05)
    for got, want in zip(summed, _reference(model, batch, list(range(6)),
                                            c=0.05)):
        assert torch.allclose(got, want, atol=1e-6)


def test_auto_takes_the_fastest_exact_engine():
    engine = _engine('auto', _Residual())
    engine.clipped_sum(_data(_Residual()), list(range(6)), 1.0)
    assert engine.chosen.name == 'fast'
    assert len(engine.report) == 1 and engine.report[0].startswith(
        'chose fast (matches per-sample autograd')


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match='privacy.engine'):
        _engine('ghost', _Residual())
