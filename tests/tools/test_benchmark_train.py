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
    assert 'dp physical_batch_size=4 / non-private: time per iteration' in text
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
    rows = [dict(time=t, data_time=0.0) for t in (30.0, 2.0, 3.0, 1.0)]
    run = dict(rows=rows, wall_s=36.0, peak_rss_mib=1.0, by_phase=None)
    summary = benchmark_train.summarise(run, warmup=1)
    assert summary['time'] == 2.0 and summary['mean_time'] == 2.0
