#!/usr/bin/env bash
# Builds spruce.runtime._engine (and _bench, the benchmarks' timing loops) for
# development and puts them under src/, so `PYTHONPATH=src python ...` finds
# them. Usage: scripts/build_inplace.sh [--asan]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/inplace
ASAN=OFF
if [ "${1:-}" = "--asan" ]; then BUILD=build/asan; ASAN=ON; fi
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSPRUCE_ASAN=$ASAN \
    -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build "$BUILD" -j 2
for SO in "$BUILD"/_engine*.so "$BUILD"/_bench*.so; do
    # Replace atomically (new inode): processes that loaded the old module keep it intact.
    cp "$SO" "src/spruce/runtime/.$(basename "$SO").tmp"
    mv -f "src/spruce/runtime/.$(basename "$SO").tmp" "src/spruce/runtime/$(basename "$SO")"
    echo "built $(basename "$SO") -> src/spruce/runtime/ (asan=$ASAN)"
done
