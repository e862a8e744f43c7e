#!/usr/bin/env bash
# Builds spruce's native engine (and the _bench timing module) with AddressSanitizer
# and UndefinedBehaviorSanitizer (which aborts at its first finding) and runs the
# engine and kernel tests against that build (a copy of the package under
# build/asan-pkg, so the release build is untouched). Python leaks by design: leak
# checks off.
# Usage: scripts/asan_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/asan
PKG=build/asan-pkg
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSPRUCE_ASAN=ON \
    -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
rm -rf "$PKG" && mkdir -p "$PKG"
cp -r src/spruce "$PKG/"
find "$PKG" \( -name '_engine*.so' -o -name '_bench*.so' \) -delete
cp "$BUILD"/_engine*.so "$BUILD"/_bench*.so "$PKG/spruce/runtime/"
LIBASAN=$(${CXX:-g++} -print-file-name=libasan.so)
# libstdc++ preloaded too, so ASan's __cxa_throw interceptor finds the real one
# (without it the first C++ exception, e.g. in TensorFlow's import, aborts).
LIBSTDCXX=$(${CXX:-g++} -print-file-name=libstdc++.so)
echo "== AddressSanitizer + UndefinedBehaviorSanitizer: $LIBASAN"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_odr_violation=0
export PYTHONPATH="$PWD/$PKG"
export TF_CPP_MIN_LOG_LEVEL=2
# The model property test converts many models (slow under ASan); the mutated-plan
# fuzz and the corrupted-file tests are what matter here.
LD_PRELOAD="$LIBASAN:$LIBSTDCXX" python3 -m pytest -q -p no:cacheprovider \
    tests/test_engine.py tests/test_kernels.py \
    "tests/test_engine_fuzz.py::test_corrupted_plans_raise_value_error_never_crash" "$@"
