"""Private fine-tuning of a model-zoo style checkpoint: BatchNorm frozen,
a head trained on other keypoints re-initialised, partial fine-tuning."""
import pytest
import torch

from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file

from ..conftest import tiny_config
from .test_train_test_e2e import _config, _run

BN = dict(_delete_=True, type='BN')
PAPER_RECIPE = dict(params=[r'^backbone\.stage4\.', r'^head\.'],
                    norm_layers=True)


@pytest.fixture(scope='module')
def coco_checkpoint(tmp_path_factory, synthetic_mpii):
    """A BatchNorm checkpoint of the tiny HRNet with a 17-keypoint (COCO)
    head and non-trivial BatchNorm statistics."""
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS
    init_default_scope('mmpose')
    cfg = tiny_config(synthetic_mpii, '/tmp', **{
        'model.backbone.norm_cfg': BN, 'model.head.out_channels': 17})
    torch.manual_seed(3)
    model = MODELS.build(cfg.model).train()
    with torch.no_grad():
        for _ in range(3):  # statistics of "public" images
            model.backbone(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    path = tmp_path_factory.mktemp('zoo') / 'coco_hrnet.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def _trained(tmp_path, synthetic_mpii, coco_checkpoint, **options):
    cfg = _config(tmp_path, synthetic_mpii, **{
        'model.backbone.norm_cfg': BN, 'load_from': str(coco_checkpoint),
        'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1, **options})
    proc = _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    ckpt = load_checkpoint_file(tmp_path / 'w' / 'epoch_1.pth', 'cpu')
    return proc.stdout + proc.stderr, ckpt


def test_a_coco_head_is_reinitialised_and_the_rest_loads(
        tmp_path, synthetic_mpii, coco_checkpoint):
    log, ckpt = _trained(tmp_path, synthetic_mpii, coco_checkpoint)
    assert 'head.final_layer.weight (17, 8, 1, 1) -> (16, 8, 1, 1)' in log
    assert 'head.final_layer.bias (17,) -> (16,)' in log
    loaded = load_checkpoint_file(coco_checkpoint)['state_dict']
    stats = [k for k in loaded if k.endswith(('running_mean', 'running_var'))]
    assert stats and all(torch.equal(ckpt['state_dict'][k], loaded[k])
                         for k in stats)
    assert ckpt['privacy_plan']['batch_norm']['mode'] == 'freeze'


def test_partial_fine_tuning_trains_only_what_it_names(
        tmp_path, synthetic_mpii, coco_checkpoint):
    log, ckpt = _trained(tmp_path, synthetic_mpii, coco_checkpoint,
                         **{'privacy.trainable': PAPER_RECIPE})
    loaded = load_checkpoint_file(coco_checkpoint)['state_dict']
    trained = ckpt['state_dict']
    plan = ckpt['privacy_plan']['trainable']
    assert 0 < plan['trainable'] < plan['trainable'] + plan['frozen']
    assert f"{plan['trainable']} parameters in" in log
    assert f"{plan['trainable']} trainable parameters clipped and noised" \
        in log
    frozen = [k for k in loaded if k.startswith('backbone.layer1.')
              and k.endswith('conv1.weight')]
    assert frozen and all(torch.equal(trained[k], loaded[k]) for k in frozen)
    moved = [k for k in loaded if k.startswith('backbone.stage4.')
             and k.endswith('conv1.weight')]
    assert moved and all(not torch.equal(trained[k], loaded[k])
                         for k in moved)
    norms = [k for k in loaded if k.startswith('backbone.layer1.')
             and '.bn1.weight' in k]
    assert norms and all(not torch.equal(trained[k], loaded[k])
                         for k in norms)
