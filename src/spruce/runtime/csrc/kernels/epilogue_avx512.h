// The fused activation of kernels.h on 16 lanes, for the sparse 1x1 and
// depthwise AVX-512 kernels (include only from *_avx512.cc files). The same
// operations in the same order as avx2::activate, so results match its bits.
#pragma once

#include <immintrin.h>

#include "kernels/kernels_impl.h"
#include "kernels/vec_avx512.h"

namespace spruce {
namespace kernels {
namespace avx512 {

template <bool kHardSwish>
inline __m512 activate(__m512 x, __m512 lo, __m512 hi) {
  if (kHardSwish) {
    __m512 r = _mm512_add_ps(x, _mm512_set1_ps(3.0f));
    r = _mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
    x = _mm512_mul_ps(_mm512_mul_ps(x, r), _mm512_set1_ps(1.0f / 6.0f));
  }
  return _mm512_min_ps(_mm512_max_ps(x, lo), hi);
}

// What an epilogue applies to each sum before the store: the clamp of
// Activation, hard-swish then the clamp, or the clamp then swish (the bits of
// a store followed by swish_rows over it).
enum EpilogueKind : int { kClamp = 0, kHardSwishClamp = 1, kClampSwish = 2 };

template <int kKind>
inline __m512 finish(__m512 x, __m512 lo, __m512 hi) {
  x = activate<kKind == kHardSwishClamp>(x, lo, hi);
  return kKind == kClampSwish ? vec::swish<vec::Avx512>(x) : x;
}

struct Epilogue {
  __m512 lo, hi;
  bool hard_swish;
  explicit Epilogue(const Activation& a)
      : lo(_mm512_set1_ps(a.min)), hi(_mm512_set1_ps(a.max)), hard_swish(a.hard_swish) {}
  inline __m512 operator()(__m512 x) const { return hard_swish ? activate<true>(x, lo, hi) : activate<false>(x, lo, hi); }
};

// The first n (0..16) lanes.
inline __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }

}  // namespace avx512
}  // namespace kernels
}  // namespace spruce
