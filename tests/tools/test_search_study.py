"""tools/search_study.py: the search and the default run share the study's
config, with secret seeds and the validation set declared public."""
from mmengine.config import Config

from privacy_utility_study import FULL, Study
from search_study import base_config, render


def test_base_config_has_secret_seeds_and_a_public_validation_set(tmp_path):
    path = tmp_path / 'base.py'
    path.write_text(base_config(Study(str(tmp_path), FULL, 0, []), 2.0,
                                str(tmp_path / 'pre.pth')))
    cfg = Config.fromfile(str(path))
    assert cfg.public_validation is True
    assert cfg.privacy.target_epsilon == 2.0
    assert cfg.privacy.max_grad_norm == FULL['headline'][1]
    assert 'noise_seed' not in cfg.privacy
    assert 'sampler_seed' not in cfg.privacy


def test_render_reports_both_rows():
    text = render(dict(
        epsilon=2.0, distribution='poisson', mean_trials=4, minutes=3,
        default=dict(pckh=40.0, epsilon=1.99, sigma=1.38, lr=1e-3, C=0.01),
        search=dict(pckh=42.0, epsilon=1.99, trial_epsilon=1.1, sigma=2.0,
                    hyperparameters={'privacy.max_grad_norm': 0.03},
                    validation_pckh=43.0, naive_epsilon=2.3)))
    assert '| one run, defaults |' in text and '| private search, best |' \
        in text and '40.00' in text and '42.00' in text
