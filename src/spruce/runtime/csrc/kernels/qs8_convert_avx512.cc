// AVX-512 float32 -> int8 quantization (see qs8.h), 16 values per step.
#include "kernels/kernels_impl.h"

#if SPRUCE_X86_KERNELS && defined(__AVX512F__)
#include <immintrin.h>

namespace spruce {
namespace kernels {

__attribute__((target("avx512f,avx512bw,avx512vl"))) void qs8_quantize_avx512(const float* x, int8_t* y, int64_t n,
                                                                               float inverse_scale,
                                                                               int32_t zero_point) {
  const __m512 inv = _mm512_set1_ps(inverse_scale);
  const __m512 lo = _mm512_set1_ps(static_cast<float>(-128 - zero_point));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(127 - zero_point));
  const __m512i zp = _mm512_set1_epi32(zero_point);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 f = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv);
    // max(f, lo) with lo second: a NaN becomes lo, as in the portable kernel.
    f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);
    _mm_mask_storeu_epi8(y + i, m, _mm512_cvtsepi32_epi8(q));
  }
}

}  // namespace kernels
}  // namespace spruce

#endif
