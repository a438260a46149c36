"""tools/benchmark_train.py: DP against non-private through tools/train.py,
with the DP run's time split by part."""
import os.path as osp
import sys

from ..conftest import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools'))


def test_benchmark_train_writes_ratios_and_a_breakdown(tmp_path):
    import benchmark_train
    out = tmp_path / 'bench.md'
    res = benchmark_train.main([
        '--preset', 'tiny', '--records', '8', '--epochs', '1',
        '--batch-size', '4', '--warmup', '0', '--profile',
        '--memory-by-phase',
        '--variants', 'default', 'physical_batch_size=4',
        '--work-dir', str(tmp_path / 'work'), '--out', str(out)])
    runs = res['runs']
    assert set(runs) == {'nonprivate', 'dp', 'dp physical_batch_size=4'}
    for r in runs.values():
        assert r['iters'] >= 1 and r['time'] > 0 and r['peak_rss_mib'] > 0
        # Each phase's highest sampled RSS, none above the run's peak.
        assert 0 < max(r['by_phase'].values()) <= r['peak_rss_mib'] + 1
    assert 'clipping engine' in runs['dp']['by_phase']
    assert 'clipping engine' not in runs['nonprivate']['by_phase']
    parts = dict(res['breakdown'])
    total = parts.pop('total (profiled)')
    assert abs(sum(parts.values()) - total) < 1e-6 * total + 1e-9
    assert parts['privacy set-up (sigma calibration, plan; once)'] > 0
    assert parts[benchmark_train.BUCKETS[3][0]] > 0  # the engine ran
    text = out.read_text()
    assert 'dp physical_batch_size=4 / non-private: time per expected ' \
        'batch' in text
    assert '| per-step privacy hooks' in text
    assert '| dp physical_batch_size=4 | ' in text.split('Highest RSS')[1]


def test_each_logged_time_is_its_own_iterations(tmp_path):
    # A window mean (MMPose's 50) would carry the first DP step's one-off
    # checks into every later iteration of a short run.
    from mmengine.config import Config

    import benchmark_train
    paths = benchmark_train.write_configs('tiny', str(tmp_path / 'data'),
                                          str(tmp_path), 4, 1, {})
    for path in paths.values():
        assert Config.fromfile(path).log_processor.window_size == 1
    rows = [dict(time=t, data_time=0.0, step=i + 1)
            for i, t in enumerate((30.0, 2.0, 3.0, 1.0))]
    run = dict(rows=rows, wall_s=36.0, peak_rss_mib=1.0, by_phase=None,
               batch=4)
    summary = benchmark_train.summarise(run, warmup=1)
    assert summary['time'] == 2.0 and summary['mean_time'] == 2.0
    # Per expected batch: 6 s for 3 iterations of 2, 6 and 4 samples.
    summary = benchmark_train.summarise(run, warmup=1, sizes=[9, 2, 6, 4])
    assert summary['per_expected_batch'] == 6.0 / 12 * 4
    assert summary['mean_batch'] == 4


def test_the_recomputed_batch_sizes_are_the_samplers_draws():
    import benchmark_train
    from mmpose_dp.datasets import PoissonBatchSampler

    from ..datasets.test_poisson_sampler import _Sampler
    sampler = PoissonBatchSampler(_Sampler(64), batch_size=8,
                                  seed=benchmark_train.SAMPLER_SEED)
    drawn = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn += [len(batch) for batch in sampler]
    assert drawn == benchmark_train.drawn_batch_sizes(64, 8, 3)
    assert len(set(drawn)) > 1  # Poisson sizes, not a constant


def test_rounds_report_medians_and_each_rounds_own_ratio():
    # The machine's speed drifts between runs: a DP run is compared with
    # the non-private run of its own round.
    import benchmark_train

    def summary(per_batch, rss):
        return dict(time=per_batch, mean_time=per_batch,
                    per_expected_batch=per_batch, mean_batch=8.0,
                    data_time=0.01, iters=16, wall_s=60.0,
                    peak_rss_mib=rss, by_phase=None)

    rounds = {'nonprivate': [summary(3.0, 100), summary(4.0, 100),
                             summary(3.2, 110)],
              'dp': [summary(3.6, 120), summary(4.4, 100),
                     summary(4.8, 121)]}
    res = benchmark_train.combine(rounds)
    assert res['nonprivate']['per_expected_batch'] == 3.2
    assert res['dp']['per_expected_batch'] == 4.4
    assert [round(t, 3) for t, _ in res['dp']['ratios']] == [1.2, 1.1, 1.5]
    assert [round(m, 3) for _, m in res['dp']['ratios']] == [1.2, 1.0, 1.1]
    text = benchmark_train.render('tiny', 8, 2, 64, res, [], ['--rounds'])
    assert 'the median of 3 interleaved rounds' in text
    assert ('dp / non-private, each of 3 interleaved rounds: time per '
            'expected batch 1.20x, 1.10x, 1.50x (median 1.20x), peak RSS '
            '1.20x, 1.00x, 1.10x (median 1.10x).') in text
    assert '| dp | 4.400 | 4.400 | 8.00 | 4.400 | 0.010 | 16 | 60 | 120 |' \
        in text
