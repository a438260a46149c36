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
        seen.append((len(buffers or {}), [t for _, t in self.groups]))

    monkeypatch.setattr(stacked.StackedGradients, '__init__', spy)
    sums = {}
    for rows in (True, False):
        engine.stack_rows = rows
        # The check once, then the path itself.
        engine.clipped_sum(batch, units, 0.05)
        seen.clear()
        sums[rows], _ = engine.clipped_sum(batch, units, 0.05)
        buffers, groups = seen[-1]
        if rows:  # the groups are the rows written during the backward
            assert buffers == len(groups) > 0
        else:
            assert buffers == 0 and len(groups) > 0
    for a, b, name in zip(sums[True], sums[False], engine.names):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=name)


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
