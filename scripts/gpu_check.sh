#!/usr/bin/env bash
# GPU check: on a CUDA machine, (1) 20 private steps of configs/dp_hrnet_mpii.py
# on generated MPII-format data through tools/train.py (epsilon logged,
# checkpoint ledger read back); (3) replayed micro-batches (privacy.cuda_graphs):
# equal to eager steps (sigma 0, fixed test key), timed against the eager fast
# engine and non-private, and TinyViT-SimCC / ViTPose-small timed; (2) the step
# benchmark on CUDA for every clipping engine (and the PDP / hybrid configs as
# shipped). Results are CUDA sections of docs/reports/benchmarks.md. Needs the
# stack installed (scripts/setup_env.sh, or scripts/prepare_offline_cuda_env.sh
# offline). Logs go to $RESULTS.
# PHASE=train, PHASE=bench or PHASE=graphs runs one part (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RESULTS=${RESULTS:-work_dirs/gpu_check}
DATA=$RESULTS/data
BENCH=${BENCH_OUT:-docs/reports/benchmarks.md}
export NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$RESULTS"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"

PHASE=${PHASE:-all}
if [ "$PHASE" != bench ]; then
# 1. 20 private steps: 640 generated images, expected batch 32, one epoch.
[ -f "$DATA/annotations/mpii_gt_val.mat" ] || \
  "$PY" tools/make_synthetic_mpii.py "$DATA" --num-train 640 --num-val 64 --size 256 256
"$PY" tools/train.py configs/dp_hrnet_mpii.py --work-dir "$RESULTS/train" --cfg-options \
  train_dataloader.dataset.data_root="$DATA/" val_dataloader.dataset.data_root="$DATA/" \
  val_dataloader.dataset.headbox_file="$DATA/annotations/mpii_gt_val.mat" \
  test_dataloader.dataset.data_root="$DATA/" \
  test_dataloader.dataset.headbox_file="$DATA/annotations/mpii_gt_val.mat" \
  train_cfg.max_epochs=1 train_cfg.val_interval=1 default_hooks.logger.interval=5 \
  train_dataloader.num_workers=4 2>&1 | tee "$RESULTS/train.log" | grep -E "\[privacy\]|Epoch\(val\)"
"$PY" tools/privacy_calculator.py --checkpoint "$RESULTS/train/epoch_1.pth" | tee "$RESULTS/ledger.txt"
fi
[ "$PHASE" = train ] && exit 0
bench() { "$PY" tools/benchmark_dp_step.py --device cuda --out "$BENCH" "$@" 2>&1 | tee -a "$RESULTS/bench.log"; }

# 3 first (the newest path): graphed = eager, then the time of each.
if [ "$PHASE" != bench ]; then
"$PY" tools/check_cuda_graphs.py --device cuda --out "$BENCH" --preset gn-hrnet-w32 \
  --physical-batch-size 32 --steps 6 2>&1 | tee -a "$RESULTS/graphs.log"
"$PY" tools/check_cuda_graphs.py --device cuda --out "$BENCH" --preset hrnet-w32-bn-frozen \
  --physical-batch-size 32 --steps 6 2>&1 | tee -a "$RESULTS/graphs.log"
bench --preset gn-hrnet-w32 --batch-size 32 --engines fast fast-graphs
bench --preset hrnet-w32-bn-frozen --batch-size 32 --engines fast fast-graphs
bench --preset tinyvit-simcc --batch-size 32 --engines vmap auto
bench --preset vitpose-small --batch-size 32 --engines vmap auto
fi
[ "$PHASE" = graphs ] && exit 0

# 2. The step benchmark on CUDA.
bench --preset gn-hrnet-w32 --batch-size 8
bench --preset gn-hrnet-w32 --batch-size 32
bench --preset hrnet-w32-bn-frozen --batch-size 32 --engines fast hooks auto
bench --preset hrnet-w32-partial --batch-size 32 --engines fast hooks auto
bench --preset vitpose-small --batch-size 32 --engines hooks vmap auto
bench --shipped configs/pdp_hrnet_mpii.py
bench --shipped configs/hybrid_hrnet_mpii.py
echo "[gpu_check] done: $BENCH, $RESULTS"
