"""tools/benchmark_step_memory.py: Poisson micro-batches cut as the DP loop
cuts them, the live peak of a step, and a tiny run's results file."""
import random

import torch
from benchmark_step_memory import live_peak_bytes, main, poisson_batches

from mmpose_dp.engine.loops import split_batch


def test_poisson_micro_batches_are_the_dp_loops_split():
    plan = poisson_batches(200, 8, 64, seed=3, max_physical=8)
    rng = random.Random(3)
    for sizes in plan:
        n = sum(rng.random() < 8 / 64 for _ in range(64))
        assert sum(sizes) == n
        split = split_batch(dict(inputs=list(range(n))), list(range(n)), 8)
        assert sizes == [len(units) for _, units in split]
    assert any(len(sizes) == 2 for sizes in plan)  # some batches above 8
    assert [] in poisson_batches(200, 1, 64, seed=0, max_physical=8)


def test_live_peak_is_the_most_memory_held_at_once_in_a_step():
    mib = 1 << 20

    def overlapping():  # a and b live together, then b and c
        a = torch.ones(mib // 4)
        b = a * 2
        del a
        c = b + 1
        del b, c

    def one_after_another():
        x = torch.ones(mib // 4)
        del x
        y = torch.ones(mib // 4)
        del y

    assert 2 * mib <= live_peak_bytes(overlapping) < 2 * mib + 4096
    assert mib <= live_peak_bytes(one_after_another) < mib + 4096


def test_tiny_run_writes_every_run_against_the_fixed_non_private_one(
        tmp_path):
    out = tmp_path / 'memory.md'
    res = main(['--preset', 'tiny', '--steps', '2', '--out', str(out)])
    assert list(res) == ['nonprivate-fixed', 'nonprivate-poisson',
                         'dp-fixed', 'dp-poisson']
    for run in res.values():
        assert len(run['step_peaks_kib']) == 2
        assert run['peak_kib'] >= max(run['step_peaks_kib']) > 0
    assert res['dp-fixed']['sizes'] == [[8], [8]]
    assert res['dp-poisson']['sizes'] == poisson_batches(2, 8, 64, 0, 8)
    text = out.read_text()
    assert '## Step memory: tiny, expected batch 8, 2 steps on CPU' in text
    assert '| nonprivate-fixed | ' in text and '| 1.00x |' in text
    assert text.count('\n| dp-') == 2
