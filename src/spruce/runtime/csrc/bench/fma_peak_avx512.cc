// The core's FMA throughput with 512-bit vectors, for reporting the AVX-512
// kernels against it (a core with two 512-bit FMA pipes doubles the AVX2 peak).
#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include <chrono>

#include "bench/fma_peak.h"

namespace spruce {
namespace bench {

// 12 independent FMA chains, as in fma_peak_avx2.cc: 2 pipes x 4-6 cycles of
// latency need at most 12 in flight, so only the FMA pipes limit the loop.
double fma_peak_gflops_avx512(double seconds) {
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-5f);
  // Distinct starting values keep the compiler from merging the chains.
  auto start_at = [](int i) { return _mm512_set1_ps(0.01f * static_cast<float>(i + 1)); };
  __m512 a0 = start_at(0), a1 = start_at(1), a2 = start_at(2), a3 = start_at(3), a4 = start_at(4),
         a5 = start_at(5), a6 = start_at(6), a7 = start_at(7), a8 = start_at(8), a9 = start_at(9),
         a10 = start_at(10), a11 = start_at(11);
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0, flops = 0.0;
  while (elapsed < seconds) {
    for (int r = 0; r < 100000; ++r) {
      a0 = _mm512_fmadd_ps(a0, m, c), a1 = _mm512_fmadd_ps(a1, m, c), a2 = _mm512_fmadd_ps(a2, m, c);
      a3 = _mm512_fmadd_ps(a3, m, c), a4 = _mm512_fmadd_ps(a4, m, c), a5 = _mm512_fmadd_ps(a5, m, c);
      a6 = _mm512_fmadd_ps(a6, m, c), a7 = _mm512_fmadd_ps(a7, m, c), a8 = _mm512_fmadd_ps(a8, m, c);
      a9 = _mm512_fmadd_ps(a9, m, c), a10 = _mm512_fmadd_ps(a10, m, c), a11 = _mm512_fmadd_ps(a11, m, c);
    }
    flops += 100000.0 * 12 * 32;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  // The chains' results are used, so the compiler keeps every FMA.
  const __m512 sum = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                    _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
      _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  volatile float sink = _mm512_reduce_add_ps(sum);
  (void)sink;
  return flops / elapsed / 1e9;
}

}  // namespace bench
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
