// Flushing denormal floats to zero while the engine runs.
//
// Arithmetic on denormals (magnitudes below 1.2e-38) takes a microcode assist
// on x86, about 100x a normal operation, and deep nets with random or decayed
// weights produce such values. The engine's own threads flush for good; the thread that calls a run
// flushes during the run and gets its previous mode back after it.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace spruce {

#if defined(__x86_64__) || defined(__i386__)
using FpMode = unsigned int;
// MXCSR: flush-to-zero (bit 15) for results, denormals-are-zero (bit 6) for inputs.
constexpr FpMode kFlushBits = 0x8040;
inline FpMode fp_mode() { return _mm_getcsr(); }
inline void set_fp_mode(FpMode m) { _mm_setcsr(m); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
using FpMode = uint64_t;
// FPCR.FZ (bit 24) flushes denormal inputs and results of float arithmetic.
constexpr FpMode kFlushBits = FpMode{1} << 24;
inline FpMode fp_mode() {
  FpMode m;
  asm volatile("mrs %0, fpcr" : "=r"(m));
  return m;
}
inline void set_fp_mode(FpMode m) { asm volatile("msr fpcr, %0" : : "r"(m)); }
#else
using FpMode = unsigned int;
constexpr FpMode kFlushBits = 0;
inline FpMode fp_mode() { return 0; }
inline void set_fp_mode(FpMode) {}
#endif

// Flushes denormals on this thread from now on (the pool's workers).
inline void flush_denormals_for_good() { set_fp_mode(fp_mode() | kFlushBits); }

// Flushes denormals on this thread until the end of the scope.
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals() : saved_(fp_mode()) {
    if ((saved_ & kFlushBits) != kFlushBits) set_fp_mode(saved_ | kFlushBits);
  }
  ~ScopedFlushDenormals() {
    if ((saved_ & kFlushBits) != kFlushBits) set_fp_mode(saved_);
  }
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

 private:
  FpMode saved_;
};

}  // namespace spruce
