#!/usr/bin/env bash
# The test suite: the backend-agnostic tests under JAX, then everything under TensorFlow.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
echo "== Keras backend: jax (tests marked multi_backend)"
KERAS_BACKEND=jax python -m pytest -q -m multi_backend -p no:cacheprovider "$@"
echo "== Keras backend: tensorflow (all tests)"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "$@"
