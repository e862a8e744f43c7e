#!/usr/bin/env bash
# Runs the engine and kernel tests against the AddressSanitizer + UBSan build of
# the native engine (built by scripts/asan_env.sh).
# Usage: scripts/asan_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/asan_env.sh
# The model property test converts many models (slow under ASan); the mutated-plan
# fuzz, the fuzz target's seeds and findings, the corrupted-file tests and the
# bindings' checks are what matter here.
LD_PRELOAD="$ASAN_PRELOAD" python3 -m pytest -q -p no:cacheprovider \
    tests/test_engine.py tests/test_kernels.py tests/test_bindings.py \
    tests/test_kernels_spconv.py tests/test_kernels_int8.py tests/test_sparse_fusion.py \
    tests/test_engine_ops_nets.py tests/test_dense_paths.py tests/test_spmm_residual.py \
    "tests/test_engine_apps.py::test_pooling_kernel_matches_numpy_over_random_shapes" \
    "tests/test_engine_fuzz.py::test_corrupted_plans_raise_value_error_never_crash" \
    "tests/test_engine_fuzz.py::test_fuzz_seeds_read_plan_build_and_run" \
    "tests/test_engine_fuzz.py::test_inputs_the_fuzzer_found_are_refused_with_the_documented_errors" "$@"
