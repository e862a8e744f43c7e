// activations_vec.h's traits on 16 lanes (AVX-512): the activation functions
// written once over the vector width, for activations_avx512.cc and the
// kernels that fuse swish into their epilogue (include only from *_avx512.cc
// files). The same operations in the same order as the AVX2 traits, so the
// results are the AVX2 ones, bit for bit.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/activations_vec.h"

namespace spruce {
namespace kernels {
namespace vec {

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

}  // namespace vec
}  // namespace kernels
}  // namespace spruce
