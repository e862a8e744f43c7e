// AVX-512 VNNI int8 fully connected layer (see qs8.h): 64 products of u8
// inputs and s8 weights per vpdpbusd, summed across the vector at the end.
#include "kernels/kernels_impl.h"

#if SPRUCE_X86_KERNELS && defined(__AVX512F__)
#include <immintrin.h>

namespace spruce {
namespace kernels {

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void qs8_fully_connected_avx512(
    const uint8_t* x, const int8_t* w, const int32_t* bias, const float* scale, const QS8Output& out, int8_t* y,
    int64_t k, int64_t o_begin, int64_t o_end) {
  const int64_t tail = k % 64;
  const __mmask64 m = tail ? (__mmask64{1} << tail) - 1 : 0;
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int8_t* row = w + o * k;
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 128 <= k; i += 128) {
      acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(x + i), _mm512_loadu_si512(row + i));
      acc1 = _mm512_dpbusd_epi32(acc1, _mm512_loadu_si512(x + i + 64), _mm512_loadu_si512(row + i + 64));
    }
    for (; i + 64 <= k; i += 64) {
      acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(x + i), _mm512_loadu_si512(row + i));
    }
    if (tail) {
      acc1 = _mm512_dpbusd_epi32(acc1, _mm512_maskz_loadu_epi8(m, x + i), _mm512_maskz_loadu_epi8(m, row + i));
    }
    const int32_t acc = bias[o] + _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
    y[o] = qs8_requantize(acc, scale[o], out.lo, out.hi, out.zero_point);
  }
}

}  // namespace kernels
}  // namespace spruce

#endif
