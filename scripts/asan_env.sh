# Sourced by scripts/asan_tests.sh and scripts/fuzz.sh: builds spruce's native
# engine (and the _bench timing module) with AddressSanitizer and
# UndefinedBehaviorSanitizer (which aborts at its first finding) into a copy of
# the package under build/asan-pkg, so the release build is untouched, and
# exports what runs Python against it: PYTHONPATH, ASAN_OPTIONS and
# ASAN_PRELOAD (for LD_PRELOAD on the Python command alone, not on the shell's
# other commands). Python leaks by design: leak checks off.
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
export ASAN_PRELOAD="$LIBASAN:$LIBSTDCXX"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_odr_violation=0
export PYTHONPATH="$PWD/$PKG"
export TF_CPP_MIN_LOG_LEVEL=2
