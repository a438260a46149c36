"""tools/stock_config_coverage.py on a representative subset of MMPose's
stock MPII configs (the full table: docs/stock_config_coverage.md)."""
import json

from stock_config_coverage import main, stock_configs


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
