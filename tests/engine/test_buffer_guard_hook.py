"""BufferGuardHook: the run-time guard against buffers learned from private
data."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmpose_dp.engine import BufferGuardHook
from mmpose_dp.models import NotPrivateError


class _RunningMean(nn.Module):
    """A buffer with an innocent name, updated from the data in train
    mode: only the run-time guard can see it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.register_buffer('seen', torch.zeros(3))

    def forward(self, x):
        if self.training:
            self.seen += x.detach().mean(0)
        return self.fc(x)


def test_a_step_that_changes_a_buffer_stops_the_run():
    model = _RunningMean().train()
    runner = SimpleNamespace(model=model)
    hook = BufferGuardHook()
    hook.before_train_iter(runner, batch_idx=0)
    model(torch.randn(4, 3))
    with pytest.raises(NotPrivateError, match=r"\['seen'\]"):
        hook.after_train_iter(runner, batch_idx=0)
