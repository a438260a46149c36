"""The fast engine frees what it does not keep as early as autograd does."""
import weakref

import torch

from mmpose_dp.privacy.engines import FastEngine, TensorBatchLoss
from mmpose_dp.privacy.engines.fast import engine as fast_engine


class _TwoConvs(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Conv2d(3, 2, 1)
        self.second = torch.nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_an_input_the_engine_does_not_keep_is_freed_in_the_backward(
        monkeypatch):
    # The output hooks live as long as the graph; holding their layer's
    # input would keep every activation until the pass ends (about 1.5 GiB
    # more at the end of GN-HRNet-W32's backward at batch 8).
    torch.manual_seed(0)
    model = _TwoConvs()
    engine = FastEngine(model, TensorBatchLoss(
        lambda net, x, y: ((net(x) - y)**2).flatten(1).sum(1).mean()),
        'mean')
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2, 8, 8)
    engine.clipped_sum((x, y), [0, 1, 2, 3], 1.0)  # the first-use check
    capture = engine.layers[model.second]
    inputs = []

    def receive(a, g, state=None, original=capture.receive):
        inputs.append(weakref.ref(a))
        original(a, g, state)

    monkeypatch.setattr(capture, 'receive', receive)
    alive_after_backward = []

    def norms(*args, original=fast_engine.total_squared_norms):
        # instantiated, not ghost: the layer keeps neither input nor norm
        assert not capture.kept and capture.norm2 is None
        alive_after_backward.append(inputs[-1]() is not None)
        return original(*args)

    monkeypatch.setattr(fast_engine, 'total_squared_norms', norms)
    engine.clipped_sum((x, y), [0, 1, 2, 3], 1.0)
    assert len(inputs) == 1 and alive_after_backward == [False]
