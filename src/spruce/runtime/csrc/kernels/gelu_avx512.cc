// GELU on 16 lanes (AVX-512): gelu_vec.h's formulas, as gelu_avx2.cc runs them.
#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include "kernels/gelu_vec.h"
#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {
namespace {

struct Avx512 {
  using Vec = __m512;
  static constexpr size_t kLanes = 16;
  static Vec set1(float v) { return _mm512_set1_ps(v); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
  static Vec min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec fnmadd(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }
  static Vec exponent_bits(Vec biased) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(biased), 23));
  }
  // a where x's sign bit is set (as AVX2's blendv picks), b elsewhere.
  static Vec select_negative(Vec x, Vec a, Vec b) {
    const __mmask16 negative = _mm512_test_epi32_mask(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
    return _mm512_mask_blend_ps(negative, b, a);
  }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static __mmask16 mask(size_t n) { return static_cast<__mmask16>((1u << n) - 1); }
  static Vec load_tail(const float* p, size_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_tail(float* p, size_t n, Vec v) { _mm512_mask_storeu_ps(p, mask(n), v); }
};

}  // namespace

void gelu_avx512(const float* x, float* y, size_t n, bool approximate) {
  if (approximate) vec::apply<Avx512, vec::gelu_tanh<Avx512>>(x, y, n);
  else vec::apply<Avx512, vec::gelu<Avx512>>(x, y, n);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
