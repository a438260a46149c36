"""The study's --quick mode end to end, and its resumption."""
import csv

import privacy_utility_study
from privacy_utility_study import main


def test_quick_study_writes_table_and_plot_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / 'study'
    results = main(['--quick', '--out', str(out)])
    methods = {r['method'] for r in results}
    assert methods == {'non-private', 'public-features-only', 'DP-SGD', 'PDP',
                       'FDP', 'Hybrid'}
    rows = list(csv.DictReader(open(out / 'results.csv')))
    # GroupNorm route: 2 baselines + 4 methods x 2 epsilons; model-zoo
    # route (BatchNorm pretraining, frozen when private): 1 + 4 x 1.
    assert len(rows) == len(results) == 15
    assert sum(r['route'] == 'zoo' for r in rows) == 5
    for row in rows:
        assert 0 <= float(row['pckh']) <= 100
        if row['epsilon']:
            # Every DP run stayed within its budget, by its own ledger.
            assert float(row['spent_epsilon']) <= float(row['epsilon'])
            assert float(row['sigma']) > 0 and int(row['steps']) > 0
    table = (out / 'results.md').read_text()
    assert '| epsilon | DP-SGD | PDP | FDP | Hybrid |' in table
    assert 'Model-zoo route (stock BatchNorm pretraining' in table
    from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
    zoo = load_checkpoint_file(
        next((out / 'runs').glob('dp-sgd_*_zoo/epoch_1.pth')), 'cpu')
    assert zoo['privacy_plan']['batch_norm']['mode'] == 'freeze'
    assert (out / 'pckh_vs_epsilon.png').stat().st_size > 10_000
    # Interrupted or repeated: finished runs are not redone (no training
    # or testing process is started again).
    def no_rerun(cmd, log):
        raise AssertionError(f'a finished run was started again: {cmd}')

    monkeypatch.setattr(privacy_utility_study, 'run', no_rerun)
    again = main(['--quick', '--out', str(out)])
    assert [r['pckh'] for r in again] == [r['pckh'] for r in results]
