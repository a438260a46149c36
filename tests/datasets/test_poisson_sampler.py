import numpy as np
import pytest

from mmpose_dp.datasets import PoissonBatchSampler, dp_pseudo_collate, \
    is_empty_batch


class _Sampler:
    def __init__(self, n):
        self.dataset = list(range(n))
        self.epoch = 0


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


def test_default_seed_is_secret():
    a = PoissonBatchSampler(_Sampler(300), batch_size=10)
    b = PoissonBatchSampler(_Sampler(300), batch_size=10)
    assert a.seed != b.seed


def test_public_indices_are_never_drawn_and_not_counted():
    public = list(range(0, 100))
    sampler = PoissonBatchSampler(_Sampler(400), batch_size=30, seed=0,
                                  public_indices=public)
    assert sampler.num_private == 300
    assert sampler.sample_rate == pytest.approx(0.1)
    drawn = {i for e in range(5) for b in sampler.global_batches(e)
             for i in b}
    assert drawn and drawn.isdisjoint(public)


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
    for step in range(20):
        shares = [set(p[step]) for p in per_rank]
        union = set().union(*shares)
        assert sum(len(s) for s in shares) == len(union)  # disjoint
        expected = set(next(iter([list(samplers[0].global_batches(0))]))
                       [step].tolist())
        assert union == expected


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
    assert len(a.public_indices) == 100
    assert a.num_private == 400 and a.sample_rate == pytest.approx(10 / 400)
    drawn = {i for e in range(20) for batch in a.global_batches(e)
             for i in batch.tolist()}
    assert drawn.isdisjoint(a.public_indices)
    assert len(drawn) > 350  # the private records are all in play
