"""The fast engine's two ways of stacking per-sample gradients: written
into per-shape rows during the backward (the CPU's default: one copy each,
no second copy of every gradient at the end) or stacked after it (the
GPU's: one op per shape). Both give the same clipped sum."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
from mmpose_dp.models import detect_loss_reduction
from mmpose_dp.privacy.engines import FastEngine
from mmpose_dp.privacy.engines.fast import stacked

from ..conftest import build_tiny_pose


@pytest.mark.parametrize('units', [[0, 1, 2, 3], [0, 0, 1, 2]])
def test_rows_and_stacking_give_the_same_clipped_sum(synthetic_mpii, units,
                                                     monkeypatch):
    model, dataset = build_tiny_pose('hrnet', synthetic_mpii)
    engine = FastEngine(model, MMEngineBatchLoss(),
                        detect_loss_reduction(model))
    batch = engine.batch_loss.prepare(
        model, pseudo_collate([dataset[i] for i in range(4)]))
    seen = []
    init = stacked.StackedGradients.__init__

    def spy(self, layers, buffers=None):
        init(self, layers, buffers)
        seen.append((len(buffers or {}), [slots for slots, _ in self.groups]))

    monkeypatch.setattr(stacked.StackedGradients, '__init__', spy)
    sums = {}
    for rows in (True, False):
        engine.stack_rows = rows
        # The check once, then the path itself.
        engine.clipped_sum(batch, units, 0.05)
        seen.clear()
        sums[rows], _ = engine.clipped_sum(batch, units, 0.05)
        buffers, groups = seen[-1]
        writers = [{s[0].writes_rows for s in slots if s} for slots in groups]
        if rows:  # the rows written during the backward, then the groups
            # of the norm layers, which take none (stacked after it)
            assert writers[:buffers] == [{True}] * buffers and buffers > 0
            assert writers[buffers:] and {False} == set().union(
                *writers[buffers:])
        else:
            assert buffers == 0 and len(groups) > 0
    for a, b, name in zip(sums[True], sums[False], engine.names):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=name)


def _dispatched(fn):
    """``[(op name, None), ..., ('result', fn())]``: the ops ``fn``
    dispatched (metadata ones included), then its result."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append((func.__name__.split('.')[0], None))
            return func(*args, **(kwargs or {}))

    with Ops():
        result = fn()
    return Ops.seen + [('result', result)]


def _write_into_rows(capture, a, g, atol):
    """Instantiate into strided NaN-filled rows, as the engine's: the rows
    are returned, equal per-sample autograd and the other rows stay NaN;
    the ``copy_`` ops dispatched."""
    buffers = [torch.full((3, 2) + tuple(p.shape), float('nan'))
               for p in capture.params]
    rows = [b[:, 1] for b in buffers]
    ops = _dispatched(lambda: capture.instantiate(a, g, rows))
    written = ops.pop()[1]
    assert all(w is r for w, r in zip(written, rows))
    for row, want in zip(rows, capture.instantiate(a, g)):
        torch.testing.assert_close(row, want)
    layer = capture.module
    for b in range(3):  # per-sample autograd
        layer.zero_grad()
        (layer(a[b:b + 1]) * g[b:b + 1]).sum().backward()
        for row, p in zip(rows, capture.params):
            torch.testing.assert_close(row[b], p.grad, rtol=1e-5, atol=atol)
    assert not any(b[:, 0].isfinite().any() for b in buffers)
    return [op for op, _ in ops].count('copy_')


def _capture(layer):
    from mmpose_dp.privacy.engines.fast.rules import LAYER_RULES, layer_kind
    return LAYER_RULES[layer_kind(layer)](layer)


@pytest.mark.parametrize('one_kernel', [False, True])
@pytest.mark.parametrize('layer,shape,summed', [
    (torch.nn.LayerNorm(4), (3, 6, 4), True),
    (torch.nn.LayerNorm((2, 3)), (3, 2, 3), False)])
def test_a_norm_layer_writes_into_its_rows_without_a_copy(layer, shape,
                                                          summed, one_kernel):
    # Its weight and bias gradients are sums: written straight into the
    # rows of the stacked buffers (out=), no per-parameter copy on a CPU
    # (a GPU's one batched product is copied; a layer norm over the whole
    # sample has no sum: its bias gradient is the output gradient, copied).
    from mmpose_dp.privacy.engines.fast.norms import AffineNormCapture
    torch.manual_seed(0)
    capture = _capture(layer)
    assert isinstance(capture, AffineNormCapture)
    capture.one_kernel = one_kernel
    a, g = torch.randn(shape), torch.randn(shape)
    copies = _write_into_rows(capture, a, g, atol=1e-6)
    assert copies == (one_kernel if summed else 1)


def _norm_layers():
    from mmpose_dp.models import FrozenBatchNorm
    frozen = FrozenBatchNorm(4)
    with torch.no_grad():
        frozen.running_mean.uniform_(-2, 2)
        frozen.running_var.uniform_(0.5, 3)
    return {'group': torch.nn.GroupNorm(2, 4), 'frozen_batch': frozen}


@pytest.mark.parametrize('trainable', ['both', 'weight', 'bias'])
@pytest.mark.parametrize('shape', [(3, 4, 5, 6), (3, 4, 7), (3, 4)])
@pytest.mark.parametrize('norm', ['group', 'frozen_batch'])
def test_a_norm_layer_takes_its_gradients_from_its_backward_kernel(
        norm, shape, trainable):
    # Group norm and FrozenBatchNorm: the per-sample weight and bias
    # gradients are the norm's own backward kernel on the batch laid out
    # as one sample of B C channels (two and three ops, however large the
    # layer), equal to per-sample autograd; they take no rows.
    torch.manual_seed(0)
    layer = _norm_layers()[norm].double()
    for name, p in layer.named_parameters():
        with torch.no_grad():
            p.normal_()
        p.requires_grad_(trainable in ('both', name))
    capture = _capture(layer)
    assert not capture.writes_rows
    a = torch.randn(shape, dtype=torch.float64) * 3 + 1
    g = torch.randn(shape, dtype=torch.float64)
    ops = _dispatched(lambda: capture.instantiate(a, g))
    grads = ops.pop()[1]
    expected = {'group': ['native_group_norm', 'native_group_norm_backward'],
                'frozen_batch': ['repeat', 'repeat',
                                 'native_batch_norm_backward']}
    assert [op for op, _ in ops if op != 'view'] == expected[norm]
    assert len(grads) == len(capture.params)
    # Rows given (the engine gives none: writes_rows is False) are filled.
    rows = [torch.empty(shape[:2], dtype=torch.float64)
            for _ in capture.params]
    assert all(w is r for w, r in zip(capture.instantiate(a, g, rows), rows))
    for row, grad in zip(rows, grads):
        torch.testing.assert_close(row, grad, rtol=0, atol=0)
    for b in range(shape[0]):  # per-sample autograd
        layer.zero_grad()
        (layer(a[b:b + 1]) * g[b:b + 1]).sum().backward()
        for grad, p in zip(grads, capture.params):
            torch.testing.assert_close(grad[b], p.grad)


def test_group_norm_reuses_the_statistics_of_its_forward(synthetic_mpii):
    # The forward kernel's mean and rstd (autograd's saved tensors) give
    # the same per-sample gradients with one op fewer; an output that did
    # not come from the kernel gives no state (recomputed). In an engine
    # pass every group norm runs its forward kernel once, not twice.
    torch.manual_seed(0)
    layer = torch.nn.GroupNorm(2, 4).double()
    capture = _capture(layer)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    a, g = x * 2 + 1, torch.randn(3, 4, 5, 6, dtype=torch.float64)
    state = capture.forward_state(layer(a))
    assert state is not None
    # No way back to the graph (the hook that holds them is the graph's).
    assert all(t.grad_fn is None for t in state)
    assert capture.forward_state(layer(a).detach() + 0) is None
    a = a.detach()
    ops = _dispatched(lambda: capture.instantiate(a, g, state=state))
    reused = ops.pop()[1]
    assert [op for op, _ in ops if op != 'view'] == [
        'native_group_norm_backward']
    for x, y in zip(reused, capture.instantiate(a, g)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)

    model, dataset = build_tiny_pose('hrnet', synthetic_mpii)
    engine = FastEngine(model, MMEngineBatchLoss(),
                        detect_loss_reduction(model))
    batch = engine.batch_loss.prepare(
        model, pseudo_collate([dataset[i] for i in range(2)]))
    engine.clipped_sum(batch, [0, 1], 0.05)  # the first-use check
    calls = _dispatched(lambda: engine.clipped_sum(batch, [0, 1], 0.05))
    calls.pop()
    norms = [c for c in engine.layers.values()
             if isinstance(c.module, torch.nn.GroupNorm)]
    assert norms
    assert sum(op == 'native_group_norm' for op, _ in calls) == len(norms)


def test_a_layer_registered_as_a_frozen_batch_norm_keeps_the_generic_rule():
    # Its normalise() may be anything: multiply-and-sum into its rows.
    from mmpose_dp.models import FrozenBatchNorm

    class Shifted(FrozenBatchNorm):
        def normalise(self, x):
            return super().normalise(x) + 1

        def forward(self, x):
            shape = (-1, ) + (1, ) * (x.dim() - 2)
            return (self.normalise(x) * self.weight.view(shape)
                    + self.bias.view(shape))

    from mmpose_dp.privacy.engines.fast import rules
    rules.register_fast_layer(Shifted, 'frozen_batch_norm')
    try:
        torch.manual_seed(0)
        capture = _capture(Shifted(4))
        assert capture.writes_rows
        a, g = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
        assert _write_into_rows(capture, a, g, atol=1e-6) == 0
    finally:
        del rules.FAST_LAYERS[Shifted]


@pytest.mark.parametrize('layer,shape,copies', [
    (torch.nn.Conv2d(4, 5, 1), (3, 4, 6, 5), 0),  # pointwise: a batched GEMM
    (torch.nn.Conv1d(4, 5, 1, bias=False), (3, 4, 7), 0),
    (torch.nn.Linear(4, 5), (3, 6, 4), 0),
    (torch.nn.Conv2d(4, 5, 3, padding=1), (3, 4, 6, 5), 1),  # grouped kernel
    (torch.nn.Conv2d(4, 5, 1, stride=2), (3, 4, 6, 5), 1)])
def test_a_weight_layer_writes_into_its_rows(layer, shape, copies):
    # A linear layer's and a pointwise convolution's per-sample weight
    # gradients are batched products written into the rows (out=), as are
    # the bias sums; other convolutions copy the backend's grouped result.
    torch.manual_seed(0)
    a = torch.randn(shape)
    g = torch.randn(layer(a).shape)
    assert _write_into_rows(_capture(layer), a, g, atol=1e-5) == copies


def test_the_default_is_rows_on_the_cpu(synthetic_mpii):
    model, dataset = build_tiny_pose('hrnet', synthetic_mpii)
    engine = FastEngine(model, MMEngineBatchLoss(),
                        detect_loss_reduction(model))
    assert engine.stack_rows is None
    batch = engine.batch_loss.prepare(
        model, pseudo_collate([dataset[i] for i in range(2)]))
    engine._clipped_sum(batch, [0, 1], 0.05)
    layer = next(iter(engine.layers.values()))
    assert layer.sink == engine._stack_rows


class _SkipsALayer(torch.nn.Module):
    """Three layers of one shape share a stacked buffer (instantiated and
    kept: their 2 x 2 weights over 8 positions are below the ghost norm's
    break-even, and their gradients hold fewer numbers than their inputs
    and output gradients); ``skipped`` runs only when ``skip`` is False."""

    skip = True

    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(2, 2)
        self.skipped = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)

    def forward(self, x):
        hidden = torch.relu(self.used(x))
        if not self.skip:
            hidden = self.skipped(hidden)
        return self.head(hidden)


def _skipping_engine():
    from mmpose_dp.privacy.engines import TensorBatchLoss
    torch.manual_seed(0)
    model = _SkipsALayer()
    loss = TensorBatchLoss(
        lambda net, x, y: ((net(x) - y)**2).flatten(1).sum(1).mean())
    engine = FastEngine(model, loss, 'mean')
    engine.stack_rows = True
    return model, engine, torch.randn(4, 8, 2), torch.randn(4, 8, 2)


def _check_skipped_sum(model, engine, summed, x, y):
    """The layers that ran: the clipped sum of per-sample autograd; the
    skipped layer, if skipped: exactly zero."""
    from mmpose_dp.privacy import clip_factors, per_sample_norms
    ran = [model.used, model.head] + ([] if model.skip else [model.skipped])
    used = [p for layer in ran for p in (layer.weight, layer.bias)]
    rows = [torch.autograd.grad(
        engine.batch_loss.loss(model, (x[i:i + 1], y[i:i + 1])), used)
        for i in range(len(x))]
    per_sample = [torch.stack([r[k] for r in rows])
                  for k in range(len(used))]
    factors = clip_factors(per_sample_norms(per_sample), 0.05)
    by_param = dict(zip(engine.params, summed))
    for p, g in zip(used, per_sample):
        torch.testing.assert_close(by_param[p],
                                   torch.einsum('b,b...->...', factors, g),
                                   rtol=1e-5, atol=1e-7)
    if model.skip:
        assert not by_param[model.skipped.weight].any()
        assert not by_param[model.skipped.bias].any()


def test_a_row_no_layer_wrote_adds_nothing(monkeypatch):
    # The buffers are allocated uninitialised: a row left unwritten must be
    # zeroed, not summed as whatever the memory held (NaN here).
    from mmpose_dp.privacy.engines.fast import engine as fast_engine

    class Garbage(stacked.StackBuffer):
        def __init__(self, tensor):
            super().__init__(tensor.fill_(float('nan')))

    monkeypatch.setattr(fast_engine, 'StackBuffer', Garbage)
    model, engine, x, y = _skipping_engine()
    summed, _ = engine.clipped_sum((x, y), [0, 1, 2, 3], 0.05)
    assert {layer.module for layer, _ in engine._rows} == {
        model.used, model.skipped, model.head}
    _check_skipped_sum(model, engine, summed, x, y)


def _recorded_buffers(monkeypatch):
    """Weak references to every stacked buffer the engine allocates."""
    import weakref

    from mmpose_dp.privacy.engines.fast import engine as fast_engine
    made = []

    class Recorded(stacked.StackBuffer):
        def __init__(self, tensor):
            super().__init__(tensor)
            made.append((tuple(tensor.shape), weakref.ref(tensor)))

    monkeypatch.setattr(fast_engine, 'StackBuffer', Recorded)
    return made


@pytest.mark.parametrize('skip', [False, True])
def test_rows_of_one_shape_split_into_buffers_held_for_one_micro_batch(
        monkeypatch, skip):
    # Small buffers, allocated per micro-batch: freed once summed, so the
    # next forward (the activations' peak) reuses their memory. 3 weights
    # of 2 x 2 at B = 4 are 64 bytes of rows each: 2 + 1 rows under a cap
    # of 128 bytes; the 3 biases (32 bytes each) fit one buffer.
    from mmpose_dp.privacy.engines.fast import engine as fast_engine
    monkeypatch.setattr(fast_engine, 'ROW_BUFFER_BYTES', 128)
    made = _recorded_buffers(monkeypatch)
    model, engine, x, y = _skipping_engine()
    engine.clipped_sum((x, y), [0, 1, 2, 3], 0.05)  # the first-use check
    made.clear()
    model.skip = skip
    summed, _ = engine.clipped_sum((x, y), [0, 1, 2, 3], 0.05)
    assert sorted(shape for shape, _ in made) == [
        (4, 1, 2, 2), (4, 2, 2, 2), (4, 3, 2)]
    assert all(ref() is None for _, ref in made) and not engine._buffers
    # skipped: a row of a split buffer left unwritten adds nothing
    _check_skipped_sum(model, engine, summed, x, y)


def test_the_float64_check_leaves_no_rows(synthetic_mpii, monkeypatch):
    model, dataset = build_tiny_pose('hrnet', synthetic_mpii)
    engine = FastEngine(model, MMEngineBatchLoss(),
                        detect_loss_reduction(model))
    engine.stack_rows = True
    batch = engine.batch_loss.prepare(
        model, pseudo_collate([dataset[i] for i in range(2)]))
    made = _recorded_buffers(monkeypatch)
    from mmpose_dp.privacy.engines.verification import verify_engine
    verify_engine(engine, batch)  # in float64, with rows
    assert made and all(ref() is None for _, ref in made)
    assert not engine._buffers
