"""tools/benchmark_dp_step.py: a tiny smoke run and the results file."""
import re

from benchmark_dp_step import main, write_section


def test_tiny_run_measures_all_modes_and_writes_ratios(tmp_path):
    out = tmp_path / 'bench.md'
    res = main(['--tiny', '--steps', '1', '--device', 'cpu',
                '--public-samples', '4', '--out', str(out)])
    assert set(res) == {'nonprivate', 'private', 'hybrid'}
    assert res['hybrid']['refresh_s'] > 0
    for mode in res.values():
        assert len(mode['times']) == 1 and mode['median_s'] > 0
        assert mode['peak_rss_kib'] >= mode['rss_build_kib'] > 0
    text = out.read_text()
    assert '## tiny_hrnet_synthetic on CPU' in text
    assert ('| non-private | DP-SGD | DP / non-private | hybrid (m = k = 4) |'
            in text)
    for row in ('Time per step', 'Peak RSS (GiB)'):
        line = next(ln for ln in text.splitlines()
                    if ln.startswith(f'| {row}'))
        assert re.search(r'\| [\d.]+ \| [\d.]+ \| [\d.]+x \| [\d.]+ \|$',
                         line), line
    assert '| PDP refresh' in text


def test_write_section_replaces_only_the_same_heading(tmp_path):
    out = tmp_path / 'bench.md'
    write_section(str(out), '## cfg on CPU\n\nold cpu\n')
    write_section(str(out), '## cfg on CUDA (H100)\n\ngpu\n')
    write_section(str(out), '## cfg on CPU\n\nnew cpu\n')
    text = out.read_text()
    assert text.startswith('# Benchmarks')
    assert 'new cpu' in text and 'gpu' in text and 'old cpu' not in text
    assert text.index('## cfg on CPU') < text.index('## cfg on CUDA')
