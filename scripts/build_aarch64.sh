#!/usr/bin/env bash
# Cross-builds spruce.runtime._engine and _bench for 64-bit ARM Linux (the portable
# kernels) with the project's own CMake build, for tests/test_engine_aarch64.py, which
# runs them under qemu against the aarch64 LiteRT. Prints the _engine module's path
# last (_bench sits beside it). Usage: scripts/build_aarch64.sh [build-dir]
# Needs Debian's g++-aarch64-linux-gnu (scripts/install.sh installs it); the aarch64
# Python headers come from Debian's arm64 libpython3.11-dev, unpacked into the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/aarch64}
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    echo "build_aarch64.sh: aarch64-linux-gnu-g++ not found; install Debian's cross compiler:" \
         "apt-get install g++-aarch64-linux-gnu" >&2
    exit 2
fi
INCLUDE=$(PYTHONPATH=src python3 -c \
    "from spruce.arm64.environment import python_headers; print(python_headers(progress=False))")
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
# The host interpreter only locates pybind11; headers and module suffix are the target's.
# Debian's pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>, hence -idirafter.
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
    -DPython_EXECUTABLE="$(command -v python3)" \
    -DPython_INCLUDE_DIR="$INCLUDE/python3.11" \
    -DCMAKE_CXX_FLAGS="-idirafter $INCLUDE" \
    -DPYTHON_MODULE_EXTENSION=.cpython-311-aarch64-linux-gnu.so -DPYTHON_MODULE_DEBUG_POSTFIX= >/dev/null
cmake --build "$BUILD" -j 2
SO=$(find "$BUILD" -maxdepth 1 -name '_engine*.so' | head -1)
file "$SO" 2>/dev/null || true
echo "$SO"
