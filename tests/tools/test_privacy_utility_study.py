"""The study's --quick mode end to end, and its resumption."""
import csv
import time

from privacy_utility_study import main


def test_quick_study_writes_table_and_plot_and_resumes(tmp_path):
    out = tmp_path / 'study'
    results = main(['--quick', '--out', str(out)])
    methods = {r['method'] for r in results}
    assert methods == {'non-private', 'public-features-only', 'DP-SGD', 'PDP',
                       'FDP', 'Hybrid'}
    rows = list(csv.DictReader(open(out / 'results.csv')))
    assert len(rows) == len(results) == 10
    for row in rows:
        assert 0 <= float(row['pckh']) <= 100
        if row['epsilon']:
            # Every DP run stayed within its budget, by its own ledger.
            assert float(row['spent_epsilon']) <= float(row['epsilon'])
            assert float(row['sigma']) > 0 and int(row['steps']) > 0
    table = (out / 'results.md').read_text()
    assert '| epsilon | DP-SGD | PDP | FDP | Hybrid |' in table
    assert (out / 'pckh_vs_epsilon.png').stat().st_size > 10_000
    # Interrupted or repeated: finished runs are not redone.
    start = time.time()
    again = main(['--quick', '--out', str(out)])
    assert time.time() - start < 60
    assert [r['pckh'] for r in again] == [r['pckh'] for r in results]
