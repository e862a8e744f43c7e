// AVX-512 VNNI int8 1x1 convolution over 4-channel blocks (see qs8.h). Called
// only when cpu_has_avx512_vnni(); the functions carry their own target
// attributes, since CMake gives *_avx512.cc files AVX-512F only.
#include "kernels/kernels_impl.h"

#include <algorithm>

#if SPRUCE_X86_KERNELS && defined(__AVX512F__)
#include <immintrin.h>

#include "kernels/qs8_avx512.h"

#define SPRUCE_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace spruce {
namespace kernels {

namespace {

SPRUCE_VNNI inline __mmask64 byte_mask(int64_t n) {
  return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
}

// Requantizes 16 sums and stores the int8 results (the first `n` of them).
SPRUCE_VNNI inline void store_requantized(__m512i acc, __m512 scale, __m512 lo, __m512 hi, __m512i zp,
                                          int8_t* y, int64_t n) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
  f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
  // cvtps rounds to nearest even (the default MXCSR mode), as lrintf does.
  const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);
  const __m128i b = _mm512_cvtsepi32_epi8(q);
  if (n >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y), b);
  } else {
    _mm_mask_storeu_epi8(y, static_cast<__mmask16>((1u << n) - 1), b);
  }
}

// Rows of one tile with V vectors of 16 pixels: each stored block is one
// broadcast of its 4 weights and V dot products. Consecutive blocks go to
// kSets sets of accumulators, summed at the end: with one set, each
// accumulator's chain of dependent vpdpbusd bounds the row by their latency.
// Matrices with few blocks a row keep one set, whose sums need no adding.
template <int V, int kSets>
SPRUCE_VNNI void rows_tile(const QS8BlockMatrix& w, const uint8_t* tile, int64_t count, int32_t r_begin,
                           int32_t r_end, int8_t* out, int64_t out_stride) {
  const __m512 lo = _mm512_set1_ps(w.out.lo), hi = _mm512_set1_ps(w.out.hi);
  const __m512i zp = _mm512_set1_epi32(w.out.zero_point);
  const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(w.out.zero_point));
  const __m512i out_min = _mm512_set1_epi8(
      static_cast<char>(std::max(-128, std::min(127, static_cast<int32_t>(w.out.lo) + w.out.zero_point))));
  const __m512i order = qs8_requantize_64_order();
  const int32_t* row_ptr = w.row_ptr.data();
  const int32_t* offsets = w.offsets.data();
  const int32_t* weights = w.weights.data();
  for (int32_t o = r_begin; o < r_end; ++o) {
    __m512i acc[kSets][V];
    acc[0][0] = _mm512_set1_epi32(w.bias[o]);
    for (int v = 1; v < V; ++v) acc[0][v] = acc[0][0];
    for (int s = 1; s < kSets; ++s) {
      for (int v = 0; v < V; ++v) acc[s][v] = _mm512_setzero_si512();
    }
    const int32_t end = row_ptr[o + 1];
    int32_t k = row_ptr[o];
    for (; k + kSets <= end; k += kSets) {
      for (int s = 0; s < kSets; ++s) {
        const uint8_t* t = tile + offsets[k + s];
        const __m512i wv = _mm512_set1_epi32(weights[k + s]);
        for (int v = 0; v < V; ++v) acc[s][v] = _mm512_dpbusd_epi32(acc[s][v], _mm512_loadu_si512(t + 64 * v), wv);
      }
    }
    // The last blocks, each to its own set (s is a constant in each unrolled step, so the sets stay in registers).
#pragma GCC unroll 4
    for (int s = 0; s < kSets - 1; ++s) {
      if (k + s >= end) break;
      const uint8_t* t = tile + offsets[k + s];
      const __m512i wv = _mm512_set1_epi32(weights[k + s]);
      for (int v = 0; v < V; ++v) acc[s][v] = _mm512_dpbusd_epi32(acc[s][v], _mm512_loadu_si512(t + 64 * v), wv);
    }
    for (int s = 1; s < kSets; ++s) {
      for (int v = 0; v < V; ++v) acc[0][v] = _mm512_add_epi32(acc[0][v], acc[s][v]);
    }
    const __m512 scale = _mm512_set1_ps(w.scale[o]);
    int8_t* y = out + o * out_stride;
    if constexpr (V == 4) {
      // A whole tile: 64 outputs requantize and store at once.
      const __m512i q = qs8_requantize_64(acc[0], scale, hi, zp16, out_min, order);
      if (count >= 64) {
        _mm512_storeu_si512(y, q);
      } else {
        _mm512_mask_storeu_epi8(y, byte_mask(count), q);
      }
    } else {
      for (int v = 0; v < V; ++v) store_requantized(acc[0][v], scale, lo, hi, zp, y + 16 * v, count - 16 * v);
    }
  }
}

}  // namespace

SPRUCE_VNNI void qs8_spmm_tile_avx512(const QS8BlockMatrix& w, const uint8_t* tile, int64_t count,
                                      int32_t r_begin, int32_t r_end, int8_t* out, int64_t out_stride) {
  // Rows of 16 blocks or more on average take the 3 sets.
  if (w.stored_blocks() >= 16 * static_cast<int64_t>(w.rows)) {
    switch ((count + 15) / 16) {
      case 1: return rows_tile<1, 3>(w, tile, count, r_begin, r_end, out, out_stride);
      case 2: return rows_tile<2, 3>(w, tile, count, r_begin, r_end, out, out_stride);
      case 3: return rows_tile<3, 3>(w, tile, count, r_begin, r_end, out, out_stride);
      default: return rows_tile<4, 3>(w, tile, count, r_begin, r_end, out, out_stride);
    }
  }
  switch ((count + 15) / 16) {
    case 1: return rows_tile<1, 1>(w, tile, count, r_begin, r_end, out, out_stride);
    case 2: return rows_tile<2, 1>(w, tile, count, r_begin, r_end, out, out_stride);
    case 3: return rows_tile<3, 1>(w, tile, count, r_begin, r_end, out, out_stride);
    default: return rows_tile<4, 1>(w, tile, count, r_begin, r_end, out, out_stride);
  }
}

// Four channel rows of 64 pixels (as u8, x + 128) become four vectors of 16
// pixels x 4 channels: byte and word unpacks interleave within 128-bit lanes,
// and two rounds of lane shuffles put the pixels back in order.
SPRUCE_VNNI void qs8_interleave_tile_avx512(const int8_t* in, int64_t stride, int32_t cols, int64_t p,
                                            int64_t count, uint8_t* tile) {
  const int32_t blocks = (cols + 3) / 4;
  const __mmask64 m = byte_mask(count);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int32_t b = 0; b < blocks; ++b) {
    __m512i r[4];
    for (int j = 0; j < 4; ++j) {
      const int32_t c = 4 * b + j;
      r[j] = c < cols ? _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, in + c * stride + p), flip)
                      : _mm512_setzero_si512();
    }
    const __m512i a = _mm512_unpacklo_epi8(r[0], r[1]), bb = _mm512_unpackhi_epi8(r[0], r[1]);
    const __m512i c = _mm512_unpacklo_epi8(r[2], r[3]), d = _mm512_unpackhi_epi8(r[2], r[3]);
    const __m512i q0 = _mm512_unpacklo_epi16(a, c), q1 = _mm512_unpackhi_epi16(a, c);
    const __m512i q2 = _mm512_unpacklo_epi16(bb, d), q3 = _mm512_unpackhi_epi16(bb, d);
    const __m512i t0 = _mm512_shuffle_i32x4(q0, q1, 0x44), t1 = _mm512_shuffle_i32x4(q2, q3, 0x44);
    const __m512i t2 = _mm512_shuffle_i32x4(q0, q1, 0xEE), t3 = _mm512_shuffle_i32x4(q2, q3, 0xEE);
    uint8_t* t = tile + static_cast<int64_t>(b) * kQS8Tile * 4;
    _mm512_storeu_si512(t, _mm512_shuffle_i32x4(t0, t1, 0x88));
    _mm512_storeu_si512(t + 64, _mm512_shuffle_i32x4(t0, t1, 0xDD));
    _mm512_storeu_si512(t + 128, _mm512_shuffle_i32x4(t2, t3, 0x88));
    _mm512_storeu_si512(t + 192, _mm512_shuffle_i32x4(t2, t3, 0xDD));
  }
}

}  // namespace kernels
}  // namespace spruce

#endif
