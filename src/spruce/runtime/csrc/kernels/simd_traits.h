// Vector traits for the kernels written once over the vector width
// (gemm_simd.h, conv_hwc2chw_phased.h): each *_avx2.cc / *_avx512.cc file
// instantiates them with the traits of its ISA. Each provides Vec, Mask,
// kLanes, load/store (plain and masked), set1, fma(x, w, acc) = x * w + acc,
// add, tail(n) (mask of the first n lanes), all(), and Epilogue (kernels.h's
// Activation on one vector: hard-swish x * clamp(x + 3, 0, 6) * 1/6, then the
// clamp, in the same operations on every ISA, so they give the same bits).
#pragma once

#include <immintrin.h>

#include "kernels/kernels_impl.h"
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/simd_avx2.h"
#endif

namespace spruce {
namespace kernels {

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2Vec {
  using Vec = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  using Epilogue = avx2::Epilogue;
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, Vec v, Mask m) { _mm256_maskstore_ps(p, m, v); }
  static Vec set1(float f) { return _mm256_set1_ps(f); }
  static Vec fma(Vec x, Vec w, Vec acc) { return _mm256_fmadd_ps(x, w, acc); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Mask tail(int n) { return avx2::tail_mask(n); }
  static Mask all() { return _mm256_set1_epi32(-1); }
};
#endif

#if defined(__AVX512F__) && defined(__FMA__)
struct Avx512Vec {
  using Vec = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  struct Epilogue {
    __m512 lo, hi;
    bool hard_swish;
    explicit Epilogue(const Activation& a)
        : lo(_mm512_set1_ps(a.min)), hi(_mm512_set1_ps(a.max)), hard_swish(a.hard_swish) {}
    __m512 operator()(__m512 y) const {
      if (hard_swish) {
        __m512 t = _mm512_add_ps(y, _mm512_set1_ps(3.0f));
        t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
        y = _mm512_mul_ps(_mm512_mul_ps(y, t), _mm512_set1_ps(1.0f / 6.0f));
      }
      return _mm512_min_ps(_mm512_max_ps(y, lo), hi);
    }
  };
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, Vec v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
  static Vec set1(float f) { return _mm512_set1_ps(f); }
  static Vec fma(Vec x, Vec w, Vec acc) { return _mm512_fmadd_ps(x, w, acc); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Mask tail(int n) { return static_cast<Mask>((1u << n) - 1); }
  static Mask all() { return static_cast<Mask>(0xFFFF); }
};
#endif

}  // namespace kernels
}  // namespace spruce
