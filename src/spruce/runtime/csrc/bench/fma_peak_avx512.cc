// The core's FMA throughput with 512-bit vectors, for reporting the AVX-512
// kernels against it (a core with two 512-bit FMA pipes doubles the AVX2 peak).
#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include "bench/fma_chains.h"
#include "bench/fma_peak.h"

namespace spruce {
namespace bench {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static float sum(V a) { return _mm512_reduce_add_ps(a); }
};

}  // namespace

double fma_peak_gflops_avx512(double seconds) { return fma_chain_gflops<Avx512>(seconds); }

}  // namespace bench
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
