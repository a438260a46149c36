#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment .venv with the verified stack.
# Idempotent: a stamp keyed on this script's content skips work already done.
# mmcv 2.1.0 is built from source once per torch version and cached outside the repo
# (pip's own cache keys wheels by name/version only, so a wheel built for another torch
# would be silently reused).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
CACHE=${MMPOSE_DP_CACHE:-$HOME/.cache/mmpose-dp}
STAMP="$VENV/.mmpose_dp_setup_stamp"
WANT=$( (cat "$0"; cat setup.py requirements.txt) | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import mmpose_dp" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q "pip>=24"
# 1. torch first (a CPU-runnable build; torchvision must come from the same release line).
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "numpy<2" "setuptools>=77,<82" wheel
# 2. mmcv (full, with ops: mmpose.models imports mmcv.ops), built once per torch version.
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  WHEELS="$CACHE/mmcv-$MMCV_VERSION-torch-$TORCH_VERSION"
  if ! ls "$WHEELS"/mmcv-*.whl >/dev/null 2>&1; then
    echo "[setup] building mmcv $MMCV_VERSION for torch $TORCH_VERSION (about 15 min on 2 cores, once)"
    BUILD=$(mktemp -d)
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: \
      "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0's setup.py hard-codes -std=c++14/17.
    sed -i 's/-std=c++1[47]/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$WHEELS.tmp"
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel -q --no-build-isolation --no-deps \
      "$BUILD/mmcv-$MMCV_VERSION" -w "$WHEELS.tmp"
    rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS" && rm -rf "$BUILD"
  fi
  "${PIP[@]}" install -q --no-deps "$WHEELS"/mmcv-*.whl
fi
# 3. the rest of the runtime, numpy kept < 2 (xtcocotools is built against numpy 1.x).
"${PIP[@]}" install -q -r requirements.txt
# 4. mmpose / mmdet without their declared deps (mmpose pins chumpy, whose sdist does not build).
"${PIP[@]}" install -q --no-deps mmpose==1.3.2 mmdet==3.3.0
# mmpretrain (ViTPose's VisionTransformer, the paper's TinyViT) with its own deps,
# numpy and OpenCV kept at the pins above.
"${PIP[@]}" install -q "mmpretrain==1.2.0" "numpy<2" "opencv-python<4.12"
# 5. the project itself.
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import mmpose_dp, mmpose.models, mmcv.ops, mmpretrain.models, albumentations, opacus, prv_accountant, onnx, onnxruntime; print('[setup] ok: mmpose_dp', mmpose_dp.__version__)"
echo "$WANT" > "$STAMP"
