#!/usr/bin/env bash
# Private fine-tuning of a BatchNorm "zoo" checkpoint with the stock MMPose
# HRNet-W32 config, end to end on generated data (CPU, a few minutes):
#   1. a short non-private run of the stock td-hm_hrnet-w32 MPII config (BN)
#      stands for a model-zoo checkpoint;
#   2. configs/dp_hrnet_mpii_finetune.py (the stock config + the mixin, BN
#      frozen, last stage + norms + head trainable) loads it and trains one
#      epoch privately through tools/train.py; tools/test.py evaluates it;
#   3. the running statistics after training must equal those loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-work_dirs/finetune_check}
DATA=$OUT/data
export NO_ALBUMENTATIONS_UPDATE=1
[ -f "$DATA/annotations/mpii_gt_val.mat" ] || \
  "$PY" tools/make_synthetic_mpii.py "$DATA" --num-train 32 --num-val 8 --size 256 256 >/dev/null
DATA_OPTS=(train_dataloader.dataset.data_root="$DATA/" val_dataloader.dataset.data_root="$DATA/"
  val_dataloader.dataset.headbox_file="$DATA/annotations/mpii_gt_val.mat"
  test_dataloader.dataset.data_root="$DATA/" test_dataloader.dataset.headbox_file="$DATA/annotations/mpii_gt_val.mat"
  train_dataloader.batch_size=8 train_dataloader.num_workers=0 train_dataloader.persistent_workers=False
  val_dataloader.num_workers=0 val_dataloader.persistent_workers=False
  test_dataloader.num_workers=0 test_dataloader.persistent_workers=False
  train_cfg.max_epochs=1 train_cfg.val_interval=1 model.backbone.init_cfg=None)
MMPOSE_CFG=$("$PY" -c "import mmpose, os.path as o; print(o.join(o.dirname(mmpose.__file__), '.mim', 'configs', 'body_2d_keypoint', 'topdown_heatmap', 'mpii', 'td-hm_hrnet-w32_8xb64-210e_mpii-256x256.py'))")
"$PY" tools/train.py "$MMPOSE_CFG" --work-dir "$OUT/zoo" --cfg-options "${DATA_OPTS[@]}" \
  default_hooks.checkpoint.save_best=None > "$OUT/zoo.log" 2>&1
"$PY" tools/train.py configs/dp_hrnet_mpii_finetune.py --work-dir "$OUT/private" --cfg-options \
  "${DATA_OPTS[@]}" load_from="$OUT/zoo/epoch_1.pth" default_hooks.checkpoint.save_best=None \
  2>&1 | tee "$OUT/private.log" | grep -E "\[privacy\]"
"$PY" tools/test.py configs/dp_hrnet_mpii_finetune.py "$OUT/private/epoch_1.pth" --work-dir "$OUT/test" \
  --out "$OUT/metrics.json" --cfg-options "${DATA_OPTS[@]}" > "$OUT/test.log" 2>&1
"$PY" - "$OUT" <<'PY'
import json, sys, torch
out = sys.argv[1]
zoo = torch.load(f'{out}/zoo/epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
dp = torch.load(f'{out}/private/epoch_1.pth', map_location='cpu', weights_only=False)
stats = [k for k in zoo if k.endswith(('running_mean', 'running_var'))]
same = all(torch.equal(zoo[k], dp['state_dict'][k]) for k in stats)
frozen = [k for k in zoo if k.startswith('backbone.layer1.') and k.endswith('conv1.weight')]
print(f"[finetune_check] {len(stats)} BatchNorm statistics equal to those loaded: {same}; "
      f"frozen stage-1 convs unchanged: {all(torch.equal(zoo[k], dp['state_dict'][k]) for k in frozen)}; "
      f"plan: batch_norm={dp['privacy_plan']['batch_norm']['mode']}, trainable="
      f"{dp['privacy_plan']['trainable']['trainable']:,} of "
      f"{dp['privacy_plan']['trainable']['trainable'] + dp['privacy_plan']['trainable']['frozen']:,}; "
      f"PCKh {json.load(open(f'{out}/metrics.json'))['PCK']:.2f}")
assert same
PY
