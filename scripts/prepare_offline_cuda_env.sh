#!/usr/bin/env bash
# Install mmpose-dp's stack on an offline CUDA machine whose Python already has
# torch (and numpy, scipy, matplotlib, OpenCV), from a folder of wheels and
# sdists prepared elsewhere with `pip download`:
#   mmengine 0.10.7, mmpose 1.3.2, mmdet 3.3.0, mmpretrain 1.2.0, opacus 1.6.0,
#   prv-accountant 0.2.0 and their small pure-Python deps (see README), plus the
#   sdists mmcv-2.1.0.tar.gz and xtcocotools-1.14.3.tar.gz, which are built here.
# Usage: source scripts/prepare_offline_cuda_env.sh WHEELS_DIR [TARGET]
# Leaves PYTHONPATH pointing at TARGET (default /tmp/site) and the repository.
set -euo pipefail
WHEELS=${1:?folder of wheels and sdists}
TARGET=${2:-/tmp/site}
PY=${PYTHON:-python3}
mkdir -p "$TARGET"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$TARGET" "$WHEELS"/*.whl
export PYTHONPATH="$TARGET:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
BUILD=$(mktemp -d)
tar xzf "$WHEELS"/xtcocotools-*.tar.gz -C "$BUILD"
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$TARGET" "$BUILD"/xtcocotools-*/
# mmcv: only its CPU ops are needed (top-down pose models use plain torch ops);
# torch >= 2.10 headers need C++20 (mmcv 2.1.0 asks for C++14/17).
tar xzf "$WHEELS"/mmcv-2.1.0.tar.gz -C "$BUILD"
sed -i 's/-std=c++1[47]/-std=c++20/g' "$BUILD/mmcv-2.1.0/setup.py"
CUDA_VISIBLE_DEVICES='' MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$TARGET" "$BUILD/mmcv-2.1.0"
# mmpretrain 1.2.0 imports its multimodal models (BLIP, ...) whenever
# transformers >= 4.28 is installed, and with transformers >= 5 they fail to
# import ("TypeError: NoneType takes no arguments": PreTrainedModel is gone
# from where they look). That was the failed MMPretrain import of the last GPU
# run (the image has transformers 5.x); reproduced on the CPU with
# transformers 5.17.0. This project uses none of those models: on such a
# machine (a throwaway GPU image) transformers is uninstalled.
if ! "$PY" -c "import mmpretrain.models" 2>/dev/null && \
   "$PY" -c "import importlib.metadata as m, sys; sys.exit(int(m.version('transformers').split('.')[0]) < 5)" 2>/dev/null; then
  echo "[prepare] transformers >= 5 breaks mmpretrain 1.2.0's import: uninstalling transformers"
  "$PY" -m pip uninstall -q -y transformers
fi
"$PY" -c "import torch, mmcv.ops, mmpose.models, mmpretrain.models, opacus, prv_accountant, mmpose_dp; print('[prepare] ok: torch', torch.__version__, 'cuda', torch.cuda.is_available())"
