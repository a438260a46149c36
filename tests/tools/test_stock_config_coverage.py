"""tools/stock_config_coverage.py on a representative subset of MMPose's
stock MPII configs (the full table: docs/reports/stock_config_coverage.md)."""
import json

import pytest

from stock_config_coverage import main, stock_configs, write_coco_config


def test_the_31_stock_configs_are_found():
    configs = stock_configs()
    assert len(configs) == 31
    assert all('/mpii/' in c for c in configs)


def test_stock_configs_train_privately_with_only_the_mixin(tmp_path):
    # BatchNorm in backbone and head (MobileNetV2), a flow over keypoints
    # in the loss (RLE), albumentations and a gated attention unit (RTMPose);
    # and ViTPose-small through its own COCO config on MPII data.
    rows = main(['--out', str(tmp_path), '--num-train', '4', '--configs',
                 'mobilenetv2', 'res50_rle', 'rtmpose-m', '--extra'])
    assert len(rows) == 4
    vitpose = rows.pop()
    assert vitpose['status'] == 'trained' and vitpose['engine'] == 'vmap'
    for row in rows:
        assert row['status'] == 'trained', row
        assert row['steps'] == 2 and 0 < row['epsilon'] <= 8.0
        assert 0 <= row['pckh'] <= 100
    by_name = {r['name'].split('_')[0]: r for r in rows}
    assert 'replaced by GroupNorm' in by_name['td-hm']['batch_norm']
    assert by_name['td-reg']['patched'] == '1'
    assert by_name['td-hm']['engine'] == 'fast'
    table = (tmp_path / 'coverage.md').read_text()
    assert '3 of 3 stock MPII top-down configs train privately' in table
    assert 'vitpose-small (COCO config, MPII data) | trained' in table
    assert json.loads((tmp_path / 'coverage.json').read_text()) == \
        rows + [vitpose]


def test_the_139_stock_coco_configs_are_found():
    configs = stock_configs('coco')
    kinds = [c.split('/')[1] for c in configs]
    assert len(configs) == 139
    assert {k: kinds.count(k) for k in set(kinds)} == {
        'topdown_heatmap': 116, 'rtmpose': 10, 'simcc': 4,
        'topdown_regression': 9}
    assert all('/coco/' in c for c in configs)


def test_a_stock_coco_config_trains_reports_ap_and_is_not_rerun(tmp_path):
    argv = ['--dataset', 'coco', '--out', str(tmp_path), '--num-train', '4',
            '--only', 'td-hm_mobilenetv2_8xb64-210e_coco-256x192']
    row, = main(argv)
    assert row['status'] == 'trained', row
    assert row['steps'] >= 1 and 0 < row['epsilon'] <= 8.0
    assert 0 <= row['ap'] <= 1 and row['pckh'] is None
    assert 'replaced by GroupNorm' in row['batch_norm']
    table = (tmp_path / 'coverage.md').read_text()
    assert '1 of 1 stock COCO top-down configs train privately' in table
    # Resumable: a config already recorded is not trained again.
    (tmp_path / row['name'] / 'epoch_1.pth').unlink()
    assert main(argv) == [row]
    assert not (tmp_path / row['name'] / 'epoch_1.pth').exists()


def test_a_combined_aic_coco_config_trains_on_its_coco_part_alone(tmp_path):
    # CSPNeXt's aic-coco config predicts 19 keypoints: its COCO part keeps
    # the converter to 19, and points at the generated set.
    from mmengine.config import Config
    stock = [c for c in stock_configs('coco')
             if 'cspnext-tiny_udp_8xb256-210e_aic-coco' in c]
    assert len(stock) == 1
    path = str(tmp_path / 'config.py')
    write_coco_config(stock[0], str(tmp_path / 'data'), path)
    dataset = Config.fromfile(path).train_dataloader.dataset
    assert dataset.type == 'CombinedDataset'
    assert [d.type for d in dataset.datasets] == ['CocoDataset']
    coco = dataset.datasets[0]
    assert coco.data_root == str(tmp_path / 'data') + '/'
    assert coco.ann_file == 'annotations/person_keypoints_train.json'
    assert coco.pipeline[0].type == 'KeypointConverter'
    assert coco.pipeline[0].num_keypoints == 19
    plain = [c for c in stock_configs('coco')
             if 'td-hm_res50_8xb64-210e_coco-256x192' in c][0]
    write_coco_config(plain, str(tmp_path / 'data'), path)
    dataset = Config.fromfile(path).train_dataloader.dataset
    assert dataset.type == 'CocoDataset' and dataset.data_root.endswith('data/')


def test_a_retry_reruns_only_rows_of_that_status_with_the_settings(
        tmp_path, monkeypatch):
    import stock_config_coverage as coverage
    configs = [c for c in stock_configs('coco') if 'ViTPose-small_' in c
               or 'mobilenetv2_8xb64-210e_coco-256x192' in c]
    assert len(configs) == 2
    killed, trained = configs
    rows = [dict(config=killed, name='a', seconds=9, status='killed',
                 reason='killed by signal 9'),
            dict(config=trained, name='b', seconds=5, status='trained',
                 steps=1, epsilon=7.9, engine='fast', trainable=1,
                 batch_norm='none', patched='0', ap=0.0, pckh=None)]
    (tmp_path / 'coverage.json').write_text(json.dumps(rows))
    (tmp_path / 'data' / 'person_detection_results').mkdir(parents=True)
    ran, written = [], []

    def run_one(stock, data, out, python, writer):
        path = str(tmp_path / 'config.py')
        writer(stock, data, path)
        written.append(open(path).read())
        ran.append(stock)
        return dict(config=stock, name='a', seconds=1, status='refused',
                    reason='x', privacy=dict(coverage.PRIVACY_EXTRA))

    monkeypatch.setattr(coverage, 'run_one', run_one)
    monkeypatch.setattr(coverage, 'write_coco_config',
                        lambda stock, data, path: coverage._write(
                            stock, data, path, ''))
    out = main(['--dataset', 'coco', '--out', str(tmp_path), '--only',
                'ViTPose-small_', 'mobilenetv2_8xb64-210e_coco-256x192',
                '--retry', 'killed', '--privacy',
                'max_physical_batch_size=1'])
    assert ran == [killed]  # the trained row is kept, not rerun
    assert "'max_physical_batch_size': 1" in written[0]
    assert [r['config'] for r in out] == [trained, killed]
    assert out[1]['privacy'] == {'max_physical_batch_size': 1}
    assert "a; max_physical_batch_size=1 | **refused**" in \
        (tmp_path / 'coverage.md').read_text()
    with pytest.raises(SystemExit):
        coverage.parse_privacy(['no_value'])
