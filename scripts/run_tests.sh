#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite (CPU only).
#   bash scripts/run_tests.sh           the CI suite (tests not marked slow)
#   bash scripts/run_tests.sh --full    every test, the wide end-to-end
#                                       checks marked slow included
# Test files are spread over one pytest-xdist worker per core (WORKERS=1 for
# one process). Further arguments go to pytest (e.g. -k, -x, a test path).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export NO_ALBUMENTATIONS_UPDATE=1  # no network check on import
SELECT=(-m "not slow")
if [ "${1:-}" = "--full" ]; then
  shift
  SELECT=()
fi
CORES=$(nproc)
WORKERS=${WORKERS:-$((CORES < 4 ? CORES : 4))}
PARALLEL=()
[ "$WORKERS" -gt 1 ] && PARALLEL=(-n "$WORKERS" --dist loadfile)
TARGET=(tests)
for arg in "$@"; do
  case "$arg" in tests*) TARGET=() ;; esac  # a path given: only that
done
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 \
  "${PARALLEL[@]}" "${SELECT[@]}" "${TARGET[@]}" "$@"
