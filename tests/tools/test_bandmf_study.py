"""tools/bandmf_study.py: BandMF cells differ from the study's DP-SGD cell
by the mechanism only, and b = 1 is the study's own run."""
from mmengine.config import Config

from bandmf_study import BandedStudy
from privacy_utility_study import FULL, Study


def test_cells_differ_from_dp_sgd_by_the_mechanism_only(tmp_path):
    study = BandedStudy(str(tmp_path), FULL, 0)
    runs = study.runs()
    assert len(runs) == 2 * 3 * 4  # routes x epsilons x bands (1, 2, 4, 8)
    configs = {}
    for r in runs:
        path = tmp_path / f'{study.name(r)}.py'
        path.write_text(study.config(r, str(tmp_path / 'pre.pth')))
        configs[(r['route'], r['epsilon'], r['bands'])] = Config.fromfile(
            str(path))
    dpsgd = [r for r in runs if r['bands'] == 1]
    # The same name and config as the study's DP-SGD run: it is reused.
    for r in dpsgd:
        assert study.name(r) == Study.name(r)
        assert study.config(r, 'p') == Study.config(study, r, 'p')
    for (route, eps, b), cfg in configs.items():
        base = configs[(route, eps, 1)]
        assert cfg.privacy.target_epsilon == eps
        assert cfg.privacy.max_grad_norm == FULL['headline'][1]
        if b == 1:
            assert 'mechanism' not in cfg.privacy
            continue
        assert cfg.privacy.mechanism == dict(type='banded_mf', bands=b)
        mine = {k: v for k, v in cfg.privacy.items() if k != 'mechanism'}
        assert mine == dict(base.privacy)
        assert cfg.train_dataloader == base.train_dataloader
        assert cfg.train_cfg == base.train_cfg
