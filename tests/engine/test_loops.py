"""Micro-batches never split a privacy unit."""
from types import SimpleNamespace

from mmpose_dp.engine.loops import batch_unit_ids, split_batch


def _batch(images):
    samples = [SimpleNamespace(metainfo=dict(img_path=f'/d/{i}.jpg', id=k))
               for k, i in enumerate(images)]
    return dict(inputs=list(range(len(images))), data_samples=samples)


def test_samples_of_one_image_share_a_unit():
    batch = _batch([7, 7, 3, 9, 9, 9])
    assert batch_unit_ids(batch, 'image') == [0, 0, 1, 2, 2, 2]
    assert batch_unit_ids(batch, 'instance') == [0, 1, 2, 3, 4, 5]


def test_micro_batches_keep_units_whole():
    batch = _batch([7, 7, 3, 9, 9, 9, 4])
    units = batch_unit_ids(batch, 'image')
    micro = split_batch(batch, units, size=3)
    # [7, 7, 3] | [9, 9, 9] | [4]: no image is cut in two.
    assert [m['inputs'] for m, _ in micro] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [ids for _, ids in micro] == [[0, 0, 1], [0, 0, 0], [0]]
    assert sum(len(m['inputs']) for m, _ in micro) == 7


def test_a_unit_larger_than_the_micro_batch_is_one_micro_batch():
    batch = _batch([1, 2, 2, 2, 2])
    micro = split_batch(batch, batch_unit_ids(batch, 'image'), size=2)
    assert [m['inputs'] for m, _ in micro] == [[0], [1, 2, 3, 4]]


def test_no_size_means_one_micro_batch_and_empty_means_none():
    batch = _batch([1, 2, 1])
    (micro, ids), = split_batch(batch, batch_unit_ids(batch, 'image'), None)
    assert sorted(micro['inputs']) == [0, 1, 2] and sorted(ids) == [0, 0, 1]
    assert split_batch(dict(inputs=[], data_samples=[]), [], 4) == []
