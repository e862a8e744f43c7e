// AVX-512 helpers shared by the int8 kernels. Included only by *_avx512.cc
// files inside their __AVX512F__ guard.
#pragma once

#include <immintrin.h>

namespace spruce {
namespace kernels {

// Requantizes 64 sums as XNNPACK does: the float clamp from above only, then
// saturating packs to int16, the zero point, int8, and the lower clamp. For
// the integer bounds this gives the bits of qs8_requantize's float clamp. The
// packs interleave the vectors by 128-bit lanes: byte 16 * L + 4 * v + i of
// the result is lane 4 * L + i of acc[v].
__attribute__((target("avx512f,avx512bw"))) inline __m512i qs8_requantize_64_packed(const __m512i* acc, __m512 scale,
                                                                                    __m512 hi, __m512i zp16,
                                                                                    __m512i out_min) {
  // Written out per vector: a loop over an array kept the sums in memory.
  const auto q = [&](__m512i a) { return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), scale), hi)); };
  const __m512i w01 = _mm512_adds_epi16(_mm512_packs_epi32(q(acc[0]), q(acc[1])), zp16);
  const __m512i w23 = _mm512_adds_epi16(_mm512_packs_epi32(q(acc[2]), q(acc[3])), zp16);
  return _mm512_max_epi8(_mm512_packs_epi16(w01, w23), out_min);
}

// The same, with the results in the order of acc[0] lanes, then acc[1], ...;
// `order` puts the dwords back.
__attribute__((target("avx512f,avx512bw"))) inline __m512i qs8_requantize_64(const __m512i* acc, __m512 scale,
                                                                             __m512 hi, __m512i zp16,
                                                                             __m512i out_min, __m512i order) {
  return _mm512_permutexvar_epi32(order, qs8_requantize_64_packed(acc, scale, hi, zp16, out_min));
}

// The dword order qs8_requantize_64 takes: output dword m is dword
// (m % 4) * 4 + m / 4 of the packed vector.
__attribute__((target("avx512f"))) inline __m512i qs8_requantize_64_order() {
  return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

}  // namespace kernels
}  // namespace spruce
