import numpy as np
import pytest
import torch

from mmpose_dp.datasets import PoissonBatchSampler, dp_pseudo_collate, \
    is_empty_batch


class _Records:
    """A data set of ``n`` records; record i shows image ``images[i]``."""

    def __init__(self, n, images=None):
        self.images = list(range(n)) if images is None else images

    def __len__(self):
        return len(self.images)

    def get_data_info(self, i):
        return dict(img_path=f'/data/images/{self.images[i]:09d}.jpg', id=i)


class _Sampler:
    def __init__(self, n, images=None):
        self.dataset = _Records(n, images)
        self.epoch = 0


def _people(num_images, low=2, high=3, seed=0):
    """Image of each record for images of ``low``-``high`` people each."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(low, high + 1, num_images)
    return [i for i, c in enumerate(counts) for _ in range(c)]


def test_batch_sizes_have_binomial_mean_and_variance():
    sampler = PoissonBatchSampler(_Sampler(1000), batch_size=20, seed=1)
    q = sampler.sample_rate
    assert q == pytest.approx(0.02)
    sizes = [len(b) for e in range(40) for b in sampler.global_batches(e)]
    assert len(sizes) == 40 * 50
    # Binomial(1000, 0.02): mean 20, variance 19.6; 2000 draws.
    assert np.mean(sizes) == pytest.approx(20, abs=0.5)
    assert np.var(sizes) == pytest.approx(19.6, rel=0.15)


def test_steps_follow_the_plan_and_indices_are_not_repeated():
    sampler = PoissonBatchSampler(_Sampler(300), batch_size=10, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 30  # round(1/q) steps per epoch
    for b in batches:
        assert len(set(b)) == len(b)
        assert all(0 <= i < 300 for i in b)


def test_epochs_draw_differently_and_replay_with_the_seed():
    a = PoissonBatchSampler(_Sampler(300), batch_size=10, seed=3)
    b = PoissonBatchSampler(_Sampler(300), batch_size=10, seed=3)
    first, second = list(a), list(a)
    assert first != second
    assert list(b) == first


def test_default_seed_ignores_the_public_global_seeds():
    # MMEngine seeds numpy, torch and random with the logged randomness.seed;
    # the sampling seed must not follow them.
    draws = []
    for _ in range(2):
        np.random.seed(123)
        torch.manual_seed(123)
        draws.append(list(PoissonBatchSampler(_Sampler(300), batch_size=10)))
    assert draws[0] != draws[1]


def test_a_fixed_seed_warns_that_it_voids_the_guarantee(monkeypatch):
    from mmpose_dp.datasets import poisson_sampler
    logged = []
    monkeypatch.setattr(poisson_sampler, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    PoissonBatchSampler(_Sampler(300), batch_size=10)
    assert logged == []
    PoissonBatchSampler(_Sampler(300), batch_size=10, seed=3)
    assert 'VOIDS the guarantee' in logged[0]


def test_the_sampler_cannot_be_pickled():
    import pickle
    with pytest.raises(TypeError, match='secret'):
        pickle.dumps(PoissonBatchSampler(_Sampler(30), batch_size=3))


def test_ranks_split_one_global_draw():
    samplers = []
    for rank in range(3):
        s = PoissonBatchSampler(_Sampler(600), batch_size=10, seed=7)
        s.rank, s.world_size = rank, 3
        s.expected_batch_size = 30
        s.sample_rate = 30 / 600
        s.steps_per_epoch = 20
        samplers.append(s)
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1  # same number of steps
    global_batches = list(samplers[0].global_batches(0))
    for step in range(20):
        shares = [set(p[step]) for p in per_rank]
        union = set().union(*shares)
        assert sum(len(s) for s in shares) == len(union)  # disjoint
        assert union == set(global_batches[step])


def test_batch_larger_than_the_private_set_is_refused():
    with pytest.raises(ValueError, match='exceeds'):
        PoissonBatchSampler(_Sampler(10), batch_size=20, seed=0)


def test_empty_batch_collates_to_empty_lists():
    batch = dp_pseudo_collate([])
    assert batch == dict(inputs=[], data_samples=[])
    assert is_empty_batch(batch)
    assert not is_empty_batch(dp_pseudo_collate([dict(inputs=1,
                                                      data_samples=2)]))


def test_carved_out_public_samples_are_never_private():
    a = PoissonBatchSampler(_Sampler(500), batch_size=10, seed=0,
                            public_samples=100, public_seed=4)
    b = PoissonBatchSampler(_Sampler(500), batch_size=10, seed=1,
                            public_samples=100, public_seed=4)
    assert a.public_indices == b.public_indices  # the carve-out is seeded
    assert a.public_set_id == b.public_set_id
    assert len(a.public_indices) == 100
    assert a.num_private == 400 and a.sample_rate == pytest.approx(10 / 400)
    drawn = {i for e in range(20) for batch in a.global_batches(e)
             for i in batch}
    assert drawn.isdisjoint(a.public_indices)
    assert len(drawn) > 350  # the private records are all in play


def test_the_public_carve_out_takes_whole_images():
    images = _people(200)
    sampler = PoissonBatchSampler(_Sampler(len(images), images),
                                  batch_size=10, seed=0, public_samples=30,
                                  unit='instance')
    public = {images[i] for i in sampler.public_indices}
    private = {images[i] for i in sampler.private_indices}
    assert public.isdisjoint(private)
    assert len(sampler.public_indices) >= 30
    assert sampler.num_private == len(images) - len(sampler.public_indices)


def test_the_image_unit_draws_all_records_of_an_image_together():
    images = _people(300)
    sampler = PoissonBatchSampler(_Sampler(len(images), images),
                                  batch_size=15, seed=2, unit='image')
    assert sampler.num_private == 300  # images, not records
    assert sampler.sample_rate == pytest.approx(15 / 300)
    records_of = {}
    for record, image in enumerate(images):
        records_of.setdefault(image, set()).add(record)
    sizes = []
    for batch in sampler.global_batches(0):
        drawn = {images[i] for i in batch}
        assert set(batch) == set().union(*[records_of[i] for i in drawn])
        sizes.append(len(drawn))
    # Binomial(300, 0.05) images per step.
    assert np.mean(sizes) == pytest.approx(15, abs=2)


def test_ranks_keep_whole_images():
    images = _people(200)
    shares = []
    for rank in range(2):
        s = PoissonBatchSampler(_Sampler(len(images), images), batch_size=10,
                                seed=5, unit='image')
        s.rank, s.world_size = rank, 2
        shares.append([{images[i] for i in b} for b in s])
    for a, b in zip(*shares):
        assert a.isdisjoint(b)


def test_an_unknown_unit_is_refused():
    with pytest.raises(ValueError, match='privacy.unit'):
        PoissonBatchSampler(_Sampler(30), batch_size=3, unit='person')


def test_a_repeated_record_is_one_instance_unit():
    # RepeatDataset(times=3): the same records three times, one unit each.
    class _Repeated(_Records):
        def __len__(self):
            return 3 * len(self.images)

        def get_data_info(self, i):
            return super().get_data_info(i % len(self.images))

    sampler = _Sampler(0)
    sampler.dataset = _Repeated(0, list(range(50)))
    poisson = PoissonBatchSampler(sampler, batch_size=5, seed=0,
                                  unit='instance')
    assert poisson.num_private == 50
    assert poisson.sample_rate == pytest.approx(5 / 50)
    for batch in poisson.global_batches(0):
        records = sorted(i % 50 for i in batch)
        assert records == sorted(r for r in set(records) for _ in range(3))


def test_copies_of_one_image_are_one_image_unit(tmp_path):
    # Two paths, the same bytes: one image, drawn together, one unit.
    (tmp_path / 'a.jpg').write_bytes(b'same pixels')
    (tmp_path / 'b.jpg').write_bytes(b'same pixels')
    (tmp_path / 'c.jpg').write_bytes(b'other pixels')

    class _Files(_Records):
        def get_data_info(self, i):
            return dict(img_path=str(tmp_path / 'abc'[self.images[i]]) +
                        '.jpg', id=i)

    sampler = _Sampler(0)
    sampler.dataset = _Files(0, [0, 1, 2])
    poisson = PoissonBatchSampler(sampler, batch_size=1, seed=0)
    assert poisson.num_private == 2
    assert sorted(map(list, poisson.units)) == [[0, 1], [2]]
