#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite (CPU only, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export NO_ALBUMENTATIONS_UPDATE=1  # no network check on import
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
