// AVX2 helpers shared by the *_avx2.cc kernels (include only from those files).
#pragma once

#include <immintrin.h>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {
namespace avx2 {

// Mask with the first `n` (0..8) lanes set, for maskload/maskstore.
inline __m256i tail_mask(int n) {
  alignas(32) static const int32_t kBits[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kBits + 8 - n));
}

// Lanes 0, 2, ..., 14 (even_lanes) or 1, 3, ..., 15 (odd_lanes) of the 16 floats
// lo:hi, in order: splits a row into its even and odd columns (stride 2).
inline __m256 even_lanes(__m256 lo, __m256 hi) {
  const __m256 s = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

inline __m256 odd_lanes(__m256 lo, __m256 hi) {
  const __m256 s = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

// The fused epilogue of kernels.h's Activation, on 8 lanes.
// Hard-swish (if kHardSwish), then the clamp to [lo, hi]. Kernels short of
// registers call this with lo / hi in locals and the flag fixed at compile time.
template <bool kHardSwish>
inline __m256 activate(__m256 x, __m256 lo, __m256 hi) {
  if (kHardSwish) {
    __m256 r = _mm256_add_ps(x, _mm256_set1_ps(3.0f));
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
    x = _mm256_mul_ps(_mm256_mul_ps(x, r), _mm256_set1_ps(1.0f / 6.0f));
  }
  return _mm256_min_ps(_mm256_max_ps(x, lo), hi);
}

struct Epilogue {
  __m256 lo, hi;
  bool hard_swish;
  explicit Epilogue(const Activation& a)
      : lo(_mm256_set1_ps(a.min)), hi(_mm256_set1_ps(a.max)), hard_swish(a.hard_swish) {}
  inline __m256 operator()(__m256 x) const { return hard_swish ? activate<true>(x, lo, hi) : activate<false>(x, lo, hi); }
};

}  // namespace avx2
}  // namespace kernels
}  // namespace spruce
