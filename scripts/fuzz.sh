#!/usr/bin/env bash
# Fuzzes the .tflite reader, the loader and the native engine (tests/fuzz/) with
# atheris for SECONDS seconds (default 300), then runs every input it kept once
# more against the AddressSanitizer + UBSan build (scripts/asan_env.sh).
# The fuzzing itself runs on the release build (src/ when built there, else the
# installed package): preloading g++'s libasan hands atheris that library's
# coverage hooks instead of its own, which leaves the fuzzer blind.
# Starts from the seeds in tests/fuzz/corpus; inputs that add coverage go to
# build/fuzz/corpus (kept between runs), findings to build/fuzz/ (crash-*,
# timeout-*, oom-*), and any finding fails the run. Reproduce one with
#   python tests/fuzz/fuzz_engine.py build/fuzz/crash-...
# and add it to tests/fuzz/crashers/ once fixed (tests/test_engine_fuzz.py runs those).
# Usage: scripts/fuzz.sh [seconds] [extra libFuzzer flags]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-300}
shift || true
python3 -c "import atheris" 2>/dev/null || {
  echo "scripts/fuzz.sh needs atheris: pip install atheris (or pip install '.[fuzz]')" >&2
  exit 2
}
mkdir -p build/fuzz/corpus
# -timeout: seconds an input may take (a hang); -rss_limit_mb: the target's memory
# bound (ASan's shadow memory included); -max_len: above the largest seed, so that
# a re-encoded model fits.
FLAGS=(-timeout=20 -rss_limit_mb=6144 -max_len=32768 -artifact_prefix=build/fuzz/ -print_final_stats=1)
echo "== fuzzing the reader, loader and engine for ${SECONDS_TO_RUN} s"
(
  if compgen -G "src/spruce/runtime/_engine*.so" >/dev/null; then export PYTHONPATH="$PWD/src"; fi
  python3 tests/fuzz/fuzz_engine.py build/fuzz/corpus tests/fuzz/corpus \
      -max_total_time="$SECONDS_TO_RUN" "${FLAGS[@]}" "$@"
)
echo "== every kept input and crasher once more, under ASan + UBSan"
source scripts/asan_env.sh
LD_PRELOAD="$ASAN_PRELOAD" python3 tests/fuzz/fuzz_engine.py -runs=0 "${FLAGS[@]}" \
    build/fuzz/corpus tests/fuzz/corpus tests/fuzz/crashers
