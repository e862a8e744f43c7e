// activations_vec.h's and gelu_vec.h's traits on 8 lanes (AVX2 + FMA), for
// activations_avx2.cc and gelu_avx2.cc (include only from *_avx2.cc files). The
// same operations in the same order as vec_avx512.h's, so the results are the
// AVX-512 ones, bit for bit.
#pragma once

#include <immintrin.h>

#include <cstddef>

#include "kernels/simd_avx2.h"

namespace spruce {
namespace kernels {
namespace vec {

struct Avx2 {
  using Vec = __m256;
  static constexpr size_t kLanes = 8;
  static Vec set1(float v) { return _mm256_set1_ps(v); }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
  static Vec min(Vec a, Vec b) { return _mm256_min_ps(a, b); }
  static Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec fnmadd(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
  // The float whose bits are those of `biased` shifted into the exponent field.
  static Vec exponent_bits(Vec biased) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(biased), 23));
  }
  // blendv picks by each lane's sign bit: a where x is negative (or -0), b elsewhere.
  static Vec select_negative(Vec x, Vec a, Vec b) { return _mm256_blendv_ps(b, a, x); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec load_tail(const float* p, size_t n) {
    return _mm256_maskload_ps(p, avx2::tail_mask(static_cast<int>(n)));
  }
  static void store_tail(float* p, size_t n, Vec v) {
    _mm256_maskstore_ps(p, avx2::tail_mask(static_cast<int>(n)), v);
  }
};

}  // namespace vec
}  // namespace kernels
}  // namespace spruce
