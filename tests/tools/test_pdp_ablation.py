"""tools/pdp_ablation.py: every variant is one change to the study's cell,
but the last PDP one, which combines the changes that help."""
from mmengine.config import Config

from pdp_ablation import VARIANTS, Ablation
from privacy_utility_study import FULL


def test_each_variant_changes_one_factor_of_the_cell(tmp_path):
    ablation = Ablation(str(tmp_path), FULL, [0, 1])
    runs = ablation.runs()
    assert len(runs) == 2 * len(VARIANTS)
    configs = {}
    for r in runs:
        if r['seed'] != 0:
            continue
        path = tmp_path / f"{ablation.name(r)}.py"
        path.write_text(ablation.config(r, str(tmp_path / 'pre.pth')))
        configs[r['variant']] = Config.fromfile(str(path))
    base = configs['pdp'].privacy
    assert base.projection.rank == 64 and 'dataset' in base.public_data
    assert configs['pdp_batch_mean_basis'].privacy.projection.basis == \
        'batch_mean'
    assert configs['pdp_rank4'].privacy.projection.rank == 4
    assert configs['pdp_rank16'].privacy.projection.rank == 16
    carved = configs['pdp_in_distribution'].privacy.public_data
    assert carved.num_samples == 64 and 'dataset' not in carved
    assert configs['pdp_refresh10'].privacy.projection.interval == 10
    for name in ('pdp_sgd', 'dpsgd_sgd'):
        optimizer = configs[name].optim_wrapper.optimizer
        assert optimizer.type == 'SGD' and optimizer.momentum == 0.9
    assert configs['pdp'].optim_wrapper.optimizer.type == 'AdamW'
    combined = configs['pdp_combined']
    assert combined.privacy.public_data.num_samples == 64
    assert 'dataset' not in combined.privacy.public_data
    assert combined.privacy.projection.interval == 10
    assert combined.privacy.projection.rank == 64
    assert combined.optim_wrapper.optimizer.type == 'SGD'
    assert 'projection' not in configs['dpsgd'].privacy
    for name, cfg in configs.items():
        assert cfg.privacy.target_epsilon == 1.0
        assert cfg.privacy.max_grad_norm == 0.01
