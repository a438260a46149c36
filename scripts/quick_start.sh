#!/usr/bin/env bash
# The main job on an embedded default: set up (or reuse) .venv, generate a
# small MPII-format data set, train a tiny GroupNorm HRNet with DP-SGD through
# tools/train.py, evaluate it with tools/test.py, and print PCKh and epsilon.
# Takes a few minutes on a laptop CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
DATA=data/synthetic_mpii
CONFIG=configs/synthetic/dp_tiny_hrnet_synthetic.py
WORK=work_dirs/quick_start
if [ ! -f "$DATA/annotations/mpii_gt_val.mat" ]; then
  $PY tools/make_synthetic_mpii.py "$DATA" --num-train 2048 --num-val 256 --seed 0
fi
$PY tools/train.py "$CONFIG" --work-dir "$WORK"
CKPT=$(ls -t "$WORK"/epoch_*.pth | head -n 1)
$PY tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --out "$WORK/metrics.json"
echo "== quick start result ($CKPT) =="
$PY - "$WORK/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"MPII-style PCKh@0.5 (mean) = {m['PCK']:.2f}%   PCKh@0.1 = {m['PCK@0.1']:.2f}%")
PY
$PY tools/privacy_calculator.py --checkpoint "$CKPT"
