#!/usr/bin/env bash
# The main job on an embedded default, in about five minutes on a laptop CPU:
# set up (or reuse) .venv, generate a small MPII-format private set and a
# public set from another distribution, pretrain a tiny HRNet on the public
# set (no privacy: public data), fine-tune it privately on the private set
# with BatchNorm frozen (DP-SGD, epsilon 8), and print its PCKh@0.5 next to
# the same fine-tuning without privacy and DP-SGD from scratch, each with
# its epsilon (read from its checkpoint's privacy ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
DATA=data/synthetic_mpii
PUBLIC=data/synthetic_mpii_public
WORK=work_dirs/quick_start
mkdir -p "$WORK"
START=$SECONDS
step() { echo; echo "== [$((SECONDS - START)) s] $*"; }

step "1/6 generating data: 2048 private images (+256 val) and 512 public ones (another distribution)"
[ -f "$DATA/annotations/mpii_gt_val.mat" ] || \
  $PY tools/make_synthetic_mpii.py "$DATA" --num-train 2048 --num-val 256 --seed 0 > /dev/null
[ -f "$PUBLIC/annotations/mpii_gt_val.mat" ] || \
  $PY tools/make_synthetic_mpii.py "$PUBLIC" --num-train 512 --num-val 1 --seed 1000 --style shifted > /dev/null
PUB="train_dataloader.dataset.data_root=$PUBLIC/"
VAL="val_dataloader.dataset.data_root=$DATA/ val_dataloader.dataset.headbox_file=$DATA/annotations/mpii_gt_val.mat"

step "2/6 pretraining on the public set, without privacy (12 epochs)"
$PY tools/train.py configs/synthetic/tiny_hrnet_bn_synthetic.py --work-dir "$WORK/public_pretrain" \
  --cfg-options $PUB $VAL train_cfg.max_epochs=12 train_cfg.val_interval=12 \
  train_dataloader.batch_size=32 default_hooks.logger.interval=50 > "$WORK/public_pretrain.log" 2>&1
PRETRAINED=$WORK/public_pretrain/epoch_12.pth

step "3/6 private fine-tuning, BatchNorm frozen, DP-SGD at epsilon 8 (configs/synthetic/dp_tiny_hrnet_finetune_synthetic.py)"
$PY tools/train.py configs/synthetic/dp_tiny_hrnet_finetune_synthetic.py --work-dir "$WORK/private_finetune" \
  --cfg-options load_from=$PRETRAINED default_hooks.logger.interval=16 2>&1 | grep -E "\[privacy\] (noise|final)|Epoch\(train\)" | cut -c1-160

step "4/6 the same fine-tuning without privacy (for comparison)"
$PY tools/train.py configs/synthetic/tiny_hrnet_bn_synthetic.py --work-dir "$WORK/nonprivate_finetune" \
  --cfg-options load_from=$PRETRAINED train_cfg.max_epochs=4 train_cfg.val_interval=4 \
  train_dataloader.batch_size=64 optim_wrapper.optimizer.lr=0.001 param_scheduler=[] \
  default_hooks.logger.interval=50 > "$WORK/nonprivate_finetune.log" 2>&1

step "5/6 DP-SGD from scratch, GroupNorm, epsilon 8 (configs/synthetic/dp_tiny_hrnet_synthetic.py)"
$PY tools/train.py configs/synthetic/dp_tiny_hrnet_synthetic.py --work-dir "$WORK/dp_from_scratch" \
  2>&1 | grep -E "\[privacy\] (noise|final)" | cut -c1-160

step "6/6 evaluating each model with tools/test.py"
report() {  # slug label config checkpoint
  $PY tools/test.py "$3" "$4" --work-dir "$WORK/test_$1" --out "$WORK/$1.json" > /dev/null 2>&1
  $PY - "$2" "$WORK/$1.json" "$4" <<'PY'
import json, sys
from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
from mmpose_dp.engine.checkpoint_privacy import privacy_state
from mmpose_dp.privacy import PrivacyLedger
name, metrics, ckpt = sys.argv[1:]
pckh = json.load(open(metrics))['PCK']
state, _ = privacy_state(load_checkpoint_file(ckpt, 'cpu'))
if state is None:
    eps = 'no privacy'
else:
    ledger = PrivacyLedger(state['delta'])
    ledger.load_state_dict(state)
    eps = f'epsilon {ledger.epsilon():.2f} (delta {ledger.delta:.1e}, PRV)'
print(f'{name:<40} PCKh@0.5 {pckh:5.1f}%   {eps}')
PY
}
echo
report private_finetune "private fine-tuning (public pretraining)" configs/synthetic/dp_tiny_hrnet_finetune_synthetic.py \
  "$WORK/private_finetune/epoch_4.pth"
report nonprivate_finetune "same fine-tuning without privacy" configs/synthetic/tiny_hrnet_bn_synthetic.py \
  "$WORK/nonprivate_finetune/epoch_4.pth"
report dp_from_scratch "DP-SGD from scratch" configs/synthetic/dp_tiny_hrnet_synthetic.py "$WORK/dp_from_scratch/epoch_8.pth"
echo
echo "Done in $((SECONDS - START)) s. The private model's guarantee:"
$PY tools/privacy_calculator.py --checkpoint "$WORK/private_finetune/epoch_4.pth"
