"""A private model leaves the plugin: stock MMPose (init_model,
inference_topdown, MMPose's own tools/test.py) and ONNX Runtime run the
exported model without mmpose_dp and compute what the private model
computes; the export carries the guarantee and nothing private."""
import json
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file

from ..conftest import ROOT
from .test_train_test_e2e import _config, _run

HERE = osp.dirname(osp.abspath(__file__))
BN = dict(_delete_=True, type='BN')
#: The paper's partial fine-tuning recipe on the tiny HRNet.
PAPER_RECIPE = dict(params=[r'^backbone\.stage4\.', r'^head\.'],
                    norm_layers=True)


def _stock_env():
    import os
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    return env


@pytest.fixture(scope='module')
def bn_checkpoint(tmp_path_factory, synthetic_mpii):
    """A public BatchNorm checkpoint of the tiny HRNet with non-trivial
    statistics (a model-zoo stand-in)."""
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS

    from ..conftest import tiny_config
    init_default_scope('mmpose')
    cfg = tiny_config(synthetic_mpii, '/tmp',
                      **{'model.backbone.norm_cfg': BN})
    torch.manual_seed(3)
    model = MODELS.build(cfg.model).train()
    with torch.no_grad():
        for _ in range(3):
            model.backbone(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    path = tmp_path_factory.mktemp('zoo') / 'hrnet_bn.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return str(path)


CASES = {
    # BatchNorm replaced by GroupNorm (8 groups divide every width here).
    'group_norm_from_scratch': {
        'model.backbone.norm_cfg': BN,
        'privacy.batch_norm': dict(mode='group_norm', num_groups=8)},
    # A BatchNorm checkpoint fine-tuned with BatchNorm frozen.
    'frozen_batch_norm': {'model.backbone.norm_cfg': BN},
    'partial_fine_tuning': {'model.backbone.norm_cfg': BN,
                            'privacy.trainable': PAPER_RECIPE},
}


class _TrainedOnDemand(dict):
    """case -> (config, checkpoint) of a one-epoch private run, trained the
    first time a test asks for it (CI runs only some cases)."""

    def __init__(self, factory, data, checkpoint):
        super().__init__()
        self.factory, self.data, self.checkpoint = factory, data, checkpoint

    def __missing__(self, case):
        options = CASES[case]
        tmp = self.factory.mktemp(case)
        if case != 'group_norm_from_scratch':
            options = dict(options, load_from=self.checkpoint)
        cfg = _config(tmp, self.data, **{
            'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1,
            **options})
        _run('tools/train.py', cfg, '--work-dir', str(tmp / 'w'))
        self[case] = (cfg, str(tmp / 'w' / 'epoch_1.pth'))
        return self[case]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, synthetic_mpii, bn_checkpoint):
    return _TrainedOnDemand(tmp_path_factory, synthetic_mpii, bn_checkpoint)


#: CI exports the frozen-BatchNorm case; the other two are marked slow.
CASE_PARAMS = [pytest.param(case, marks=() if case == 'frozen_batch_norm'
                            else pytest.mark.slow) for case in CASES]


def _export(cfg, ckpt, out, *flags):
    return _run('tools/export_private_model.py', cfg, ckpt, '--out',
                str(out), *flags)


def _boxes(synthetic_mpii, n=3):
    """Val images with their annotated people's boxes (xyxy)."""
    with open(osp.join(synthetic_mpii, 'annotations', 'mpii_val.json')) as f:
        records = json.load(f)[:n]
    out = {}
    for r in records:
        (cx, cy), s = r['center'], r['scale'] * 200
        out.setdefault(osp.join(synthetic_mpii, 'images', r['image']),
                       []).append([cx - s / 2, cy - s / 2, cx + s / 2,
                                   cy + s / 2])
    return out


def _private_keypoints(cfg, ckpt, boxes):
    """The private model, as this project rebuilds it, through MMPose's
    inference_topdown."""
    from mmengine.config import Config
    from mmpose.apis import inference_topdown

    from mmpose_dp.export import load_private_model
    model = load_private_model(Config.fromfile(cfg), ckpt)
    return {p: [r.pred_instances.keypoints.tolist() for r in
                inference_topdown(model, p, np.asarray(b, np.float32))]
            for p, b in boxes.items()}


@pytest.mark.parametrize('case', CASE_PARAMS)
def test_stock_mmpose_runs_the_exported_model_without_mmpose_dp(
        trained, tmp_path, synthetic_mpii, case):
    cfg, ckpt = trained[case]
    proc = _export(cfg, ckpt, tmp_path / 'export')
    assert 'stock MMPose config' in proc.stdout
    config = (tmp_path / 'export' / 'config.py').read_text()
    assert 'mmpose_dp' not in config and 'privacy' not in config
    assert 'PoissonBatchSampler' not in config and 'DP' not in config
    boxes = _boxes(synthetic_mpii)
    stock = subprocess.run(
        [sys.executable, osp.join(HERE, 'stock_mmpose_inference.py'),
         str(tmp_path / 'export' / 'config.py'),
         str(tmp_path / 'export' / 'model.pth'), json.dumps(boxes)],
        capture_output=True, text=True, cwd=str(tmp_path), env=_stock_env())
    assert stock.returncode == 0, stock.stderr[-3000:]
    result = json.loads(stock.stdout.strip().splitlines()[-1])
    assert result['mmpose_dp'] == []
    want = _private_keypoints(cfg, ckpt, boxes)
    got = result['keypoints']
    diff = max(float(np.abs(np.asarray(got[p]) - np.asarray(want[p])).max())
               for p in want)
    assert diff <= 1e-3
    card = json.loads((tmp_path / 'export' / 'privacy_card.json')
                      .read_text())
    assert result['epsilon'] == card['epsilon'] > 0


@pytest.mark.parametrize('case', CASE_PARAMS)
def test_mmpose_own_test_tool_reproduces_the_private_pckh(
        trained, tmp_path, case):
    cfg, ckpt = trained[case]
    _export(cfg, ckpt, tmp_path / 'export')
    private = _run('tools/test.py', cfg, ckpt, '--work-dir',
                   str(tmp_path / 'p'), '--out', str(tmp_path / 'p.json'),
                   '--dump', str(tmp_path / 'p.pkl'))
    assert private.returncode == 0
    import mmpose
    stock_tool = osp.join(osp.dirname(mmpose.__file__), '.mim', 'tools',
                          'test.py')
    stock = subprocess.run(
        [sys.executable, stock_tool, str(tmp_path / 'export' / 'config.py'),
         str(tmp_path / 'export' / 'model.pth'), '--work-dir',
         str(tmp_path / 's'), '--dump', str(tmp_path / 's.pkl')],
        capture_output=True, text=True, cwd=ROOT, env=_stock_env())
    assert stock.returncode == 0, stock.stderr[-3000:]
    pckh = json.loads((tmp_path / 'p.json').read_text())['PCK']
    assert f'PCK: {pckh:.6f}' in stock.stdout + stock.stderr
    with open(tmp_path / 'p.pkl', 'rb') as f:
        a = pickle.load(f)
    with open(tmp_path / 's.pkl', 'rb') as f:
        b = pickle.load(f)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert np.abs(x['pred_instances']['keypoints'] -
                      y['pred_instances']['keypoints']).max() <= 1e-3


def test_onnx_runtime_computes_the_exported_heatmaps(trained, tmp_path):
    cfg, ckpt = trained['frozen_batch_norm']
    proc = _export(cfg, ckpt, tmp_path / 'export', '--onnx')
    assert 'model.onnx matches torch to heatmaps' in proc.stdout
    import onnxruntime
    from mmengine.config import Config

    from mmpose_dp.export import load_private_model
    model = load_private_model(Config.fromfile(cfg), ckpt)
    x = torch.randn(3, 3, 64, 64)
    session = onnxruntime.InferenceSession(
        str(tmp_path / 'export' / 'model.onnx'),
        providers=['CPUExecutionProvider'])
    got, = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        want = model._forward(x)
    assert np.abs(got - want.numpy()).max() <= 1e-4


def test_the_export_holds_no_secret_and_no_private_statistic(
        tmp_path, synthetic_mpii):
    # Train in this process, recording every secret drawn; export; no
    # exported file holds any of them, an optimizer state, a message hub
    # or a loss.
    from .test_privacy_hardening_e2e import (SECRET, _encodings,
                                             train_recording_secrets,
                                             unique_visualizer)
    cfg = _config(tmp_path, synthetic_mpii, **SECRET, **{
        'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1},
        **unique_visualizer(tmp_path))
    drawn = train_recording_secrets(cfg, str(tmp_path / 'w'))
    assert len(drawn) >= 2
    out = tmp_path / 'export'
    _export(cfg, str(tmp_path / 'w' / 'epoch_1.pth'), out, '--onnx')
    exported = torch.load(out / 'model.pth', weights_only=True)
    assert set(exported) == {'state_dict', 'meta'}
    assert set(exported['meta']) == {'privacy'}
    for path in out.iterdir():
        data = path.read_bytes()
        for secret in drawn:
            for encoding in _encodings(secret):
                assert encoding not in data, (path.name, secret)
        words = [b'noise_seed', b'loss_kpt', b'acc_pose', b'message_hub']
        if path.suffix != '.py':  # the config names its optimizer type
            # and MMEngine's DistSamplerSeedHook (a stock hook, no seed)
            words += [b'optimizer', b'exp_avg', b'param_groups',
                      b'sampler_seed']
        for word in words:
            assert word not in data, (path.name, word)


def test_a_checkpoint_without_a_ledger_is_refused(trained, tmp_path):
    cfg, ckpt = trained['frozen_batch_norm']
    bare = load_checkpoint_file(ckpt)
    del bare['privacy_ledger'], bare['meta']['privacy']
    torch.save(bare, tmp_path / 'bare.pth')
    proc = _run('tools/export_private_model.py', cfg,
                str(tmp_path / 'bare.pth'), '--out', str(tmp_path / 'x'),
                check=False)
    assert proc.returncode != 0
    assert 'holds no privacy ledger' in proc.stderr
    assert not (tmp_path / 'x').exists()


def test_mmpose_dp_model_modules_need_to_be_allowed(tmp_path,
                                                    synthetic_mpii):
    # The tiny SimCC: GNSimCCHead (GroupNorm in a SimCC head) and a
    # GroupNorm ResNet from the config; ONNX gives both SimCC vectors.
    from ..conftest import _tiny_simcc, TINY_CONFIG
    from mmengine.config import Config
    model, codec = _tiny_simcc(Config.fromfile(TINY_CONFIG))
    pipeline = Config.fromfile(TINY_CONFIG).train_dataloader.dataset.pipeline
    for step in pipeline:
        if step['type'] == 'GenerateTarget':
            step['encoder'] = codec
    cfg = _config(tmp_path, synthetic_mpii, **{
        'model': dict(model, _delete_=True), 'codec': codec,
        'train_dataloader.dataset.pipeline': pipeline,
        'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1})
    _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    ckpt = str(tmp_path / 'w' / 'epoch_1.pth')
    refused = _run('tools/export_private_model.py', cfg, ckpt, '--out',
                   str(tmp_path / 'refused'), check=False)
    assert refused.returncode != 0
    assert "['GNSimCCHead']" in refused.stderr
    assert '--allow-mmpose-dp-modules' in refused.stderr
    proc = _export(cfg, ckpt, tmp_path / 'export', '--onnx',
                   '--allow-mmpose-dp-modules')
    assert "needs mmpose_dp model modules ['GNSimCCHead']" in proc.stdout
    assert 'simcc_x' in proc.stdout and 'simcc_y' in proc.stdout
    onnx = [float(v) for v in proc.stdout.split('matches torch to')[1]
            .replace(',', ' ').split()[1::2]]
    assert max(onnx) <= 1e-4
    assert 'mmpose_dp.models' in (tmp_path / 'export' / 'config.py') \
        .read_text()


def test_the_exported_model_is_still_recognised_as_dp(trained, tmp_path,
                                                      synthetic_mpii):
    cfg, ckpt = trained['frozen_batch_norm']
    _export(cfg, ckpt, tmp_path / 'export')
    again = _config(tmp_path, synthetic_mpii, name='again.py', **{
        'load_from': str(tmp_path / 'export' / 'model.pth'),
        'train_cfg.max_epochs': 1})
    proc = _run('tools/train.py', again, '--work-dir', str(tmp_path / 'a'),
                check=False)
    assert proc.returncode != 0
    assert 'disjoint_from_loaded_checkpoint=True' in proc.stderr


@pytest.mark.slow
def test_a_stock_hrnet_w32_trained_from_scratch_exports_as_stock_mmpose(
        tmp_path, synthetic_mpii):
    # The stock MPII HRNet-W32 config with the mixin: BatchNorm becomes
    # GroupNorm (32 groups divide every width), exported as norm_cfg GN.
    from stock_config_coverage import write_config
    cfg = str(tmp_path / 'hrnet_w32.py')
    write_config('body_2d_keypoint/topdown_heatmap/mpii/'
                 'td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py',
                 synthetic_mpii, cfg)
    with open(cfg, 'a') as f:
        f.write("train_dataloader.update(dataset=dict(data_root=data_root, "
                "indices=8))\n")
    _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    ckpt = str(tmp_path / 'w' / 'epoch_1.pth')
    proc = _export(cfg, ckpt, tmp_path / 'export', '--onnx')
    assert 'stock MMPose config' in proc.stdout, proc.stdout
    config = (tmp_path / 'export' / 'config.py').read_text()
    assert "norm_cfg=dict(num_groups=32, type='GN')" in config
    onnx = float(proc.stdout.split('heatmaps ')[1].split()[0])
    assert onnx <= 1e-4
    boxes = _boxes(synthetic_mpii, n=2)
    stock = subprocess.run(
        [sys.executable, osp.join(HERE, 'stock_mmpose_inference.py'),
         str(tmp_path / 'export' / 'config.py'),
         str(tmp_path / 'export' / 'model.pth'), json.dumps(boxes)],
        capture_output=True, text=True, cwd=str(tmp_path), env=_stock_env())
    assert stock.returncode == 0, stock.stderr[-3000:]
    result = json.loads(stock.stdout.strip().splitlines()[-1])
    assert result['mmpose_dp'] == []
    want = _private_keypoints(cfg, ckpt, boxes)
    for path in want:
        assert np.abs(np.asarray(result['keypoints'][path]) -
                      np.asarray(want[path])).max() <= 1e-3


@pytest.mark.slow
def test_groupnorm_where_a_stock_head_hard_codes_batchnorm(tmp_path,
                                                           synthetic_mpii):
    # A stock HeatmapHead builds its deconvolutions with nn.BatchNorm2d
    # whatever the config says: trained as GroupNorm, the network needs
    # GroupNormTopdownPoseEstimator (allowed), and ONNX needs nothing.
    from ..conftest import TINY_RESNET
    codec = dict(type='MSRAHeatmap', input_size=(64, 64),
                 heatmap_size=(8, 8), sigma=1)
    from mmengine.config import Config

    from ..conftest import TINY_CONFIG
    pipeline = Config.fromfile(TINY_CONFIG).train_dataloader.dataset.pipeline
    for step in pipeline:
        if step['type'] == 'GenerateTarget':
            step['encoder'] = codec
    cfg = _config(tmp_path, synthetic_mpii, **{
        'model.backbone': dict(TINY_RESNET, _delete_=True,
                               norm_cfg=dict(type='BN')),
        'model.head': dict(_delete_=True, type='HeatmapHead', in_channels=64,
                           out_channels=16, deconv_out_channels=(16, 16),
                           deconv_kernel_sizes=(4, 4),
                           loss=dict(type='KeypointMSELoss',
                                     use_target_weight=True),
                           decoder=codec),
        'codec': codec, 'train_dataloader.dataset.pipeline': pipeline,
        'privacy.batch_norm': dict(mode='group_norm', num_groups=8),
        'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1})
    _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    ckpt = str(tmp_path / 'w' / 'epoch_1.pth')
    refused = _run('tools/export_private_model.py', cfg, ckpt, '--out',
                   str(tmp_path / 'x'), check=False)
    assert "['GroupNormTopdownPoseEstimator']" in refused.stderr
    proc = _export(cfg, ckpt, tmp_path / 'export', '--onnx',
                   '--allow-mmpose-dp-modules')
    assert 'matches the private one to 0.0e+00' in proc.stdout
    assert float(proc.stdout.split('heatmaps ')[1].split()[0]) <= 1e-4
    from mmpose.apis import init_model
    model = init_model(str(tmp_path / 'export' / 'config.py'),
                       str(tmp_path / 'export' / 'model.pth'), device='cpu')
    assert type(model).__name__ == 'GroupNormTopdownPoseEstimator'
    x = torch.randn(2, 3, 64, 64)
    from mmpose_dp.export import load_private_model
    private = load_private_model(Config.fromfile(cfg), ckpt)
    with torch.no_grad():
        assert torch.equal(model._forward(x), private._forward(x))


def test_the_papers_tinyvit_simcc_exports_to_onnx(tmp_path, synthetic_mpii):
    # UpsampleSimCCHead is mmpose_dp's: the config needs mmpose_dp.models,
    # ONNX Runtime needs nothing.
    cfg = _config(tmp_path, synthetic_mpii,
                  config=f'{ROOT}/configs/synthetic/'
                  'dp_tinyvit_simcc_synthetic.py',
                  **{'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1})
    _run('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'))
    proc = _export(cfg, str(tmp_path / 'w' / 'epoch_1.pth'),
                   tmp_path / 'export', '--onnx', '--allow-mmpose-dp-modules')
    assert "modules ['UpsampleSimCCHead']" in proc.stdout
    assert 'matches the private one to 0.0e+00' in proc.stdout
    onnx = [float(v) for v in proc.stdout.split('matches torch to')[1]
            .replace(',', ' ').split()[1::2]]
    assert len(onnx) == 2 and max(onnx) <= 1e-4
