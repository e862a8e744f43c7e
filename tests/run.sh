#!/usr/bin/env bash
# The test suite: the backend-agnostic tests under JAX, then everything under TensorFlow.
# `--fast`: the tier a developer runs while working, TensorFlow only and without the tests
# marked slow (end-to-end runs, qemu, multi-device, the benchmarks); CI runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
# One pytest worker per CPU (pytest-xdist, in the `test` extra); whole files go to one worker, so a
# module's shared fixture (a trained model, a workflow run) is built once.
parallel=()
if python -c "import xdist" 2>/dev/null; then
  parallel=(-n auto --dist loadfile)
fi
if [ "${1:-}" = "--fast" ]; then
  shift
  echo "== fast tier: Keras backend tensorflow, not slow"
  KERAS_BACKEND=tensorflow exec python -m pytest -q -m "not slow" -p no:cacheprovider "${parallel[@]}" "$@"
fi
echo "== Keras backend: jax (tests marked multi_backend)"
KERAS_BACKEND=jax python -m pytest -q -m multi_backend -p no:cacheprovider "${parallel[@]}" "$@"
echo "== Keras backend: tensorflow (all tests)"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "${parallel[@]}" --durations=15 "$@"
