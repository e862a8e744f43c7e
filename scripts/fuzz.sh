#!/usr/bin/env bash
# Fuzzes the .tflite reader, the loader and the native engine (tests/fuzz/) with
# atheris for SECONDS seconds (default 300), against the AddressSanitizer + UBSan
# build (scripts/asan_env.sh; SPRUCE_FUZZ_ASAN=0 runs the release build in src/).
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
PRELOAD=""
if [ "${SPRUCE_FUZZ_ASAN:-1}" = "1" ]; then
  source scripts/asan_env.sh
  PRELOAD="$ASAN_PRELOAD"
else
  export PYTHONPATH="$PWD/src"
fi
mkdir -p build/fuzz/corpus
echo "== fuzzing the reader, loader and engine for ${SECONDS_TO_RUN} s"
# -timeout: seconds an input may take (a hang); -rss_limit_mb: the target's memory
# bound (ASan's shadow memory included); -max_len: the largest seed, so a mutation
# never grows a model past what the seeds are.
LD_PRELOAD="$PRELOAD" python3 tests/fuzz/fuzz_engine.py build/fuzz/corpus tests/fuzz/corpus \
    -max_total_time="$SECONDS_TO_RUN" -timeout=20 -rss_limit_mb=6144 -max_len=32768 \
    -artifact_prefix=build/fuzz/ -print_final_stats=1 "$@"
