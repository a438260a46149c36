"""Static micro-batch shapes (privacy.physical_batch_size): the padding is
a public dummy that adds exactly nothing, in every engine."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
from mmpose_dp.models import detect_loss_reduction
from mmpose_dp.engine.static_batches import (pad_micro_batch, public_dummy,
                                             zero_element)
from mmpose_dp.privacy.engines import build_engine
from mmpose_dp.privacy.engines.base import padding_mask

from ..conftest import build_tiny_pose

#: Samples 0-1 one image, 2 and 3 one each: 3 units in 4 samples.
UNITS = [0, 0, 1, 2]


def _clipped(engine, collated, units, padded, c=0.05):
    batch = engine.batch_loss.prepare(engine.model, collated)
    summed, _ = engine.clipped_sum(batch, units, c, padded)
    return summed


@pytest.mark.parametrize('kind', ['hrnet', 'simcc'])
@pytest.mark.parametrize('engine_name', ['fast', 'hooks', 'vmap'])
def test_padding_adds_exactly_nothing(synthetic_mpii, kind, engine_name):
    model, dataset = build_tiny_pose(kind, synthetic_mpii)
    collated = pseudo_collate([dataset[i] for i in range(len(UNITS))])
    engine = build_engine(engine_name, model, MMEngineBatchLoss(),
                          detect_loss_reduction(model))
    # Sums well above C: every unit is clipped, so a wrong factor shows.
    unpadded = _clipped(engine, collated, UNITS, 0)
    padded_batch, units, padded = pad_micro_batch(
        collated, UNITS, 7, public_dummy(collated))
    assert padded == 3 and len(padded_batch['inputs']) == 7
    assert units == UNITS + [3, 4, 5]
    padded_sum = _clipped(engine, padded_batch, units, padded)
    # Padding that would contribute a lot (real records with their
    # targets) in the padding slots: not one bit of the sum changes, so the
    # padding adds exactly nothing whatever it holds.
    loud = pseudo_collate([dataset[i] for i in range(7)])
    loud = dict(inputs=collated['inputs'] + loud['inputs'][4:],
                data_samples=collated['data_samples'] +
                loud['data_samples'][4:])
    loud_sum = _clipped(engine, loud, units, padded)
    differ = [n for n, a, b in zip(engine.names, padded_sum, loud_sum)
              if not torch.equal(a, b)]
    assert not differ, f'{len(differ)} of {len(padded_sum)} differ'
    # The unpadded pass itself is another computation (a batch-mean loss
    # scales by 1/B, kernels block by B): equal up to float rounding.
    for a, b in zip(unpadded, padded_sum):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # Unmasked, the loud padding would change the sum: the test has power.
    unmasked = _clipped(engine, loud, list(range(len(units))), 0)
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6)
               for a, b in zip(padded_sum, unmasked))


def test_the_dummy_is_zero_and_names_no_record(synthetic_mpii):
    _, dataset = build_tiny_pose('hrnet', synthetic_mpii)
    collated = pseudo_collate([dataset[0], dataset[1]])
    image, sample = public_dummy(collated)
    assert image.shape == collated['inputs'][0].shape and not image.any()
    for field in ('gt_instances', 'gt_instance_labels', 'gt_fields'):
        if field not in sample:
            continue
        element = sample.get(field)
        for key in element.keys():
            value = element.get(key)
            if hasattr(value, 'any'):
                assert not value.any(), (field, key)
    assert 'dp_padding' == sample.metainfo['img_path']
    assert sample.metainfo['img_path'] != collated['data_samples'][0].img_path
    # The record it is shaped after is left as it was.
    assert collated['data_samples'][0].gt_fields.heatmaps.any()
    assert sample.gt_fields.heatmaps.shape == \
        collated['data_samples'][0].gt_fields.heatmaps.shape


def test_list_valued_targets_are_zeroed_too():
    from mmengine.structures import InstanceData
    from mmpose.structures import PoseDataSample
    sample = PoseDataSample(metainfo=dict(img_path='/private/a.jpg'))
    sample.gt_fields = InstanceData(heatmaps=[torch.ones(2, 3),
                                              torch.ones(2, 3)])
    zero = zero_element(sample)
    assert all(not t.any() for t in zero.gt_fields.heatmaps)
    assert sample.gt_fields.heatmaps[0].all()


def test_a_unit_larger_than_the_static_size_is_refused():
    batch = dict(inputs=[torch.zeros(1)] * 3, data_samples=[None] * 3)
    with pytest.raises(ValueError, match='physical_batch_size=2') as err:
        pad_micro_batch(batch, [0, 0, 0], 2, (torch.zeros(1), None))
    assert '3' not in str(err.value)  # the unit's size is private


def test_the_loop_refuses_a_too_large_unit_before_any_step():
    from types import SimpleNamespace

    from mmpose_dp.engine.loops import DPEpochBasedTrainLoop
    sampler = SimpleNamespace(units=[[0], [1, 2, 3, 4, 5], [6]])
    loop = SimpleNamespace(physical_batch_size=4, dataloader=SimpleNamespace(
        batch_sampler=sampler))
    with pytest.raises(ValueError, match='physical_batch_size=4') as err:
        DPEpochBasedTrainLoop.check_static_size(loop)
    assert '5' not in str(err.value)
    loop.physical_batch_size = 5
    DPEpochBasedTrainLoop.check_static_size(loop)  # fits: no error
    loop.physical_batch_size = None
    sampler.units = [[0, 1, 2, 3, 4, 5, 6]]
    DPEpochBasedTrainLoop.check_static_size(loop)  # no static size


def test_padding_mask_marks_only_the_last_samples():
    mask = padding_mask([0, 0, 1, 2, 3], 2, 'cpu')
    assert mask.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert padding_mask([0, 1], 0, 'cpu') is None
    with pytest.raises(ValueError, match='unit of its own'):
        padding_mask([0, 1, 1], 2, 'cpu')
    with pytest.raises(ValueError, match='at least one real'):
        padding_mask([0, 1], 2, 'cpu')
