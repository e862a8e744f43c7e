// The core's measured FMA throughput with 256-bit vectors, for reporting the
// AVX2 kernels against it.
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include "bench/fma_chains.h"
#include "bench/fma_peak.h"

namespace spruce {
namespace bench {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static float sum(V a) { return _mm256_cvtss_f32(a); }  // one lane is enough to keep the chains
};

}  // namespace

double fma_peak_gflops_avx2(double seconds) { return fma_chain_gflops<Avx2>(seconds); }

}  // namespace bench
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
