"""tools/benchmark_dp_step.py: a tiny smoke run and the results file."""
import re

from benchmark_dp_step import (ALLOCATOR_ENV, allocator_suffix, command, main,
                                write_section)


def test_tiny_run_measures_every_engine_and_writes_ratios(tmp_path,
                                                         monkeypatch):
    for name in ALLOCATOR_ENV:  # the heading below is the C library's
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / 'bench.md'
    res = main(['--preset', 'tiny', '--batch-size', '4', '--steps', '1',
                '--device', 'cpu', '--out', str(out)])
    assert set(res) == {'nonprivate', 'fast', 'hooks', 'vmap', 'auto'}
    for mode in res.values():
        assert 'error' not in mode, mode
        assert len(mode['times']) == 1 and mode['median_s'] > 0
        assert mode['peak_rss_kib'] >= mode['rss_build_kib'] > 0
    assert res['auto']['engine'] == 'fast'
    assert set(res['fast']['breakdown']) == {'forward', 'backward', 'norms',
                                             'clipped_sum'}
    text = out.read_text()
    assert '## tiny, batch 4 on CPU' in text
    line = next(ln for ln in text.splitlines() if ln.startswith('| fast |'))
    assert re.search(r'\| [\d.]+x \| [\d.]+x \| [\d.]+ / [\d.]+ / [\d.]+ / '
                     r'[\d.]+ \|$', line), line


def test_write_section_replaces_only_the_same_heading(tmp_path):
    out = tmp_path / 'bench.md'
    write_section(str(out), '## cfg on CPU\n\nold cpu\n')
    write_section(str(out), '## cfg on CUDA (H100)\n\ngpu\n')
    write_section(str(out), '## cfg on CPU\n\nnew cpu\n')
    text = out.read_text()
    assert text.startswith('# Benchmarks')
    assert 'new cpu' in text and 'gpu' in text and 'old cpu' not in text
    assert text.index('## cfg on CPU') < text.index('## cfg on CUDA')


def test_a_result_names_the_allocator_it_ran_under(monkeypatch):
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    assert command('tools/x.py', ['--a', 'b c']) == (
        "python tools/x.py --a 'b c'")
    assert allocator_suffix() == ''
    monkeypatch.setenv('LD_PRELOAD', '/usr/lib/libjemalloc.so.2')
    monkeypatch.setenv('MALLOC_CONF', 'narenas:1')
    assert command('tools/x.py', []) == (
        'LD_PRELOAD=/usr/lib/libjemalloc.so.2 MALLOC_CONF=narenas:1 '
        'python tools/x.py')
    assert allocator_suffix() == ', jemalloc'
    monkeypatch.setenv('LD_PRELOAD', '/opt/libfoo.so /usr/lib/'
                       'libtcmalloc_minimal.so.4')
    assert allocator_suffix() == ', tcmalloc_minimal'
    monkeypatch.setenv('LD_PRELOAD', '/opt/libfoo.so')
    assert allocator_suffix() == ''
