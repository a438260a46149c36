"""The accounting benchmark on a small plan: it writes its section and the
numbers in it are the accountant's."""
import pytest
from benchmark_accounting import main

from mmpose_dp.privacy import epsilon_prv


def test_accounting_benchmark_writes_its_section(tmp_path):
    out = tmp_path / 'bench.md'
    out.write_text('# Benchmarks\n\n## dp_hrnet_mpii on CPU\n\nkept\n')
    args = ['--epsilons', '1', '2', '--dataset-size', '1000', '--batch-size',
            '50', '--epochs', '3', '--delta', '1e-4', '--queries', '3',
            '--out', str(out)]
    rows = main(args)
    assert [r['epsilon'] for r in rows] == [1, 2]
    for r in rows:
        # The calibrated sigma meets its budget, PRV no worse than RDP, and
        # the fast logged epsilon bounds the fine one from above (loosely).
        assert r['final'] <= r['epsilon']
        assert r['final'] == pytest.approx(
            epsilon_prv([(r['sigma'], 0.05, 60)], 1e-4), rel=1e-9)
        assert r['sigma'] <= r['sigma_rdp']
        assert r['final'] * 0.98 <= r['logged_final'] <= r['epsilon'] * 1.02
    text = out.read_text()
    assert 'kept' in text  # other sections survive
    assert '## Privacy accounting on' in text
    assert 'q = 0.05), 3 epochs = 60 steps' in text
    assert f"| 1 | {rows[0]['sigma']:.3f} |" in text
    assert 'Targets: calibration < 30 s' in text
