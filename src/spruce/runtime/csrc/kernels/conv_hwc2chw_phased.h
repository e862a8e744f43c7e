// The entry convolution's phased path (stride 2, RGB), written once over the
// vector width: conv_hwc2chw_avx2.cc and conv_hwc2chw_avx512.cc instantiate it
// with their vector traits (simd_traits.h). Include only from those files.
#pragma once

#include <algorithm>
#include <climits>

#include "kernels/simd_avx2.h"

namespace spruce {
namespace kernels {
namespace phased {

// Stride-2 entry conv with output pixels in lanes. Each input row is split
// once into phase rows, one per input channel and column parity, zero padded:
// padded column x of channel i goes to phase x % 2 at index x / 2 (gathers for
// the interior). A ring of K such rows serves consecutive output rows. Tap
// (ky, kx, i) of 8 consecutive outputs is then one unaligned load, and a tile
// of OC output channels x PV pixel vectors accumulates broadcast weights
// times those loads; results go straight into the CHW planes. Every output
// sums bias, then taps in (ky, kx, i) order, as conv_block does. 4 x 2 tiles
// give 8 FMA chains without spilling (4 x 3 spills, 8 x 1 loads more).
// Floats per phase row: 128 (inputs up to ~250 wide), else 512 (up to ~1020).
constexpr int32_t kPhaseWidthSmall = 128, kPhaseWidthLarge = 512;

// Phase rows of W floats usable with V's vectors: every read (last vector's
// lanes + K / 2) and every data column fit.
template <class V, int K, int W>
bool phased_applies(const ConvHwcParams& p) {
  const int32_t vectors = (p.out_w() + V::kLanes - 1) / V::kLanes;
  return vectors * V::kLanes + K / 2 <= W && (p.pad_left + p.in_w + 1) / 2 <= W && p.out_c <= 1024;
}

// Splits input row iy into C * 2 phase rows at dst (phase row of channel i,
// parity ph at dst + (i * 2 + ph) * W). Rows outside the image are zeros.
template <int C, int W>
void fill_phase_row(const ConvHwcParams& p, const float* input, int32_t iy, float* dst) {
  if (iy < 0 || iy >= p.in_h) {
    std::fill(dst, dst + C * 2 * W, 0.0f);
    return;
  }
  const float* src = input + static_cast<int64_t>(iy) * p.in_w * C;
  if (C == 3) {
    // 16 RGB pixels (6 vectors) at a time: blends and one lane permute per
    // channel split 8 pixels into R, G, B; even/odd lanes then give the phases.
    int32_t ix = 0;
    for (; ix + 16 <= p.in_w; ix += 16) {
      __m256 ch[2][3];
      for (int h = 0; h < 2; ++h) {
        const float* q = src + static_cast<int64_t>(ix + 8 * h) * 3;
        const __m256 a = _mm256_loadu_ps(q), b = _mm256_loadu_ps(q + 8), c = _mm256_loadu_ps(q + 16);
        ch[h][0] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x92), c, 0x24),
                                            _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
        ch[h][1] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x24), c, 0x49),
                                            _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6));
        ch[h][2] = _mm256_permutevar8x32_ps(_mm256_blend_ps(_mm256_blend_ps(a, b, 0x49), c, 0x92),
                                            _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
      }
      const int32_t x = ix + p.pad_left;  // padded column of pixel ix
      for (int i = 0; i < 3; ++i) {
        const __m256 even = avx2::even_lanes(ch[0][i], ch[1][i]), odd = avx2::odd_lanes(ch[0][i], ch[1][i]);
        float* d = dst + i * 2 * W;
        if (x % 2 == 0) {
          _mm256_storeu_ps(d + x / 2, even);
          _mm256_storeu_ps(d + W + x / 2, odd);
        } else {
          _mm256_storeu_ps(d + W + x / 2, even);
          _mm256_storeu_ps(d + x / 2 + 1, odd);
        }
      }
    }
    for (; ix < p.in_w; ++ix) {
      const int32_t x = ix + p.pad_left;
      for (int i = 0; i < 3; ++i) dst[(i * 2 + (x & 1)) * W + (x >> 1)] = src[ix * 3 + i];
    }
    return;
  }
  const __m256i lanes = _mm256_setr_epi32(0, 2 * C, 4 * C, 6 * C, 8 * C, 10 * C, 12 * C, 14 * C);
  for (int ph = 0; ph < 2; ++ph) {
    // Index j holds input column 2 * j + ph - pad_left.
    const int32_t j_lo = (p.pad_left - ph + 1) / 2;
    const int32_t last = p.in_w - 1 + p.pad_left - ph;  // 2 * j of the last column
    const int32_t j_hi = last >= 0 ? last / 2 + 1 : 0;
    for (int i = 0; i < C; ++i) {
      float* d = dst + (i * 2 + ph) * W;
      int32_t j = j_lo;
      for (; j + 8 <= j_hi; j += 8) {
        const float* base = src + static_cast<int64_t>(2 * j + ph - p.pad_left) * C + i;
        _mm256_storeu_ps(d + j, _mm256_i32gather_ps(base, lanes, 4));
      }
      for (; j < j_hi; ++j) d[j] = src[static_cast<int64_t>(2 * j + ph - p.pad_left) * C + i];
    }
  }
}

template <class V, int K, int C, int OC, int PV, int W>
__attribute__((always_inline)) inline void phase_tile(const float* const rows[K], int32_t ox,
                                                      const float* wt, const float* b,
                                                      typename V::Vec acc[OC][PV]) {
  for (int o = 0; o < OC; ++o) {
    const typename V::Vec bv = V::set1(b[o]);
    for (int v = 0; v < PV; ++v) acc[o][v] = bv;
  }
#pragma GCC unroll 8
  for (int ky = 0; ky < K; ++ky) {
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx) {
#pragma GCC unroll 4
      for (int i = 0; i < C; ++i) {
        const float* row = rows[ky] + (i * 2 + (kx & 1)) * W + ox + (kx >> 1);
        const float* w = wt + ((ky * K + kx) * C + i) * kConvHwcGroup;
        typename V::Vec x[PV];
        for (int v = 0; v < PV; ++v) x[v] = V::load(row + v * V::kLanes);
        for (int o = 0; o < OC; ++o) {
          const typename V::Vec wv = V::set1(w[o]);
          for (int v = 0; v < PV; ++v) acc[o][v] = V::fma(x[v], wv, acc[o][v]);
        }
      }
    }
  }
}

template <class V, int K, int C, int OC, int PV, int W>
void conv_rows_phased(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                      const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                      const Activation& act) {
  using Vec = typename V::Vec;
  constexpr int L = V::kLanes;
  const typename V::Epilogue epilogue(act);
  const int32_t out_w = p.out_w(), vectors = (out_w + L - 1) / L;
  const int64_t out_plane = static_cast<int64_t>(p.out_h()) * out_w;
  const int64_t group_size = static_cast<int64_t>(K) * K * C * kConvHwcGroup;
  // Bias padded to whole tiles.
  alignas(32) float bias_pad[1024 + 8];
  for (int32_t o = 0; o < p.out_c + OC; ++o) bias_pad[o] = (bias != nullptr && o < p.out_c) ? bias[o] : 0.0f;
  // Ring of K input rows' phase rows (+ 8: garbage lanes of a last vector may read past).
  // Only the floats of a phase row that loads reach need zeros to start with
  // (fill_phase_row writes the data columns): zeroing all W of each row was a
  // tenth of a small image's conv.
  alignas(64) float ring[K * C * 2 * W + L];
  const int32_t reached = std::min<int32_t>(W, vectors * L + K / 2);
  for (int r = 0; r < K * C * 2; ++r) std::fill(ring + r * W, ring + r * W + reached, 0.0f);
  std::fill(ring + K * C * 2 * W, ring + K * C * 2 * W + L, 0.0f);
  int32_t ring_row[K];  // input row held by each slot
  for (int k = 0; k < K; ++k) ring_row[k] = INT32_MIN;
  alignas(64) float last[L];
  for (int32_t oy = oy_begin; oy < oy_end; ++oy) {
    const float* rows[K];
    for (int ky = 0; ky < K; ++ky) {
      const int32_t iy = oy * 2 + ky - p.pad_top;
      const int slot = ((iy % K) + K) % K;
      float* dst = ring + slot * C * 2 * W;
      if (ring_row[slot] != iy) {
        fill_phase_row<C, W>(p, input, iy, dst);
        ring_row[slot] = iy;
      }
      rows[ky] = dst;
    }
    for (int32_t o0 = 0; o0 < p.out_c; o0 += OC) {
      // Weights of channels o0.. inside their packed group of 8.
      const float* wt = w.data.data() + (o0 / kConvHwcGroup) * group_size + o0 % kConvHwcGroup;
      const int oc = std::min<int32_t>(OC, p.out_c - o0);
      auto store = [&](int o, int32_t ox, Vec y) {
        float* dst = output + (o0 + o) * out_plane + static_cast<int64_t>(oy) * out_w + ox;
        y = epilogue(y);
        if (ox + L <= out_w) {
          V::store(dst, y);
        } else {
          V::store(last, y);  // no masked store: slow on AMD
          for (int32_t j = 0; j < out_w - ox; ++j) dst[j] = last[j];
        }
      };
      int32_t v = 0;
      for (; v + PV <= vectors; v += PV) {
        Vec acc[OC][PV];
        // Opaque to the optimizer, so it cannot hoist all K * K * C * OC weight
        // addresses out of this loop onto the stack (each broadcast then took a
        // second load for its address).
        const float* wt_tile = wt;
        __asm__("" : "+r"(wt_tile));
        phase_tile<V, K, C, OC, PV, W>(rows, v * L, wt_tile, bias_pad + o0, acc);
        if (oc == OC && (v + PV) * L <= out_w) {
          // Whole tile: loops of compile-time length keep acc in registers (a
          // run-time channel count sends it to the stack).
          float* dst = output + o0 * out_plane + static_cast<int64_t>(oy) * out_w + v * L;
          for (int o = 0; o < OC; ++o) {
            for (int j = 0; j < PV; ++j) V::store(dst + o * out_plane + j * L, epilogue(acc[o][j]));
          }
        } else {
          for (int o = 0; o < oc; ++o) {
            for (int j = 0; j < PV; ++j) store(o, (v + j) * L, acc[o][j]);
          }
        }
      }
      for (; v < vectors; ++v) {
        Vec acc[OC][1];
        phase_tile<V, K, C, OC, 1, W>(rows, v * L, wt, bias_pad + o0, acc);
        for (int o = 0; o < oc; ++o) store(o, v * L, acc[o][0]);
      }
    }
  }
}

// The phased kernels for kernel K on RGB at stride 2, if one fits the image
// (phase rows of 128 floats for inputs up to ~250 wide, else 512); false if none does.
template <class V, int K, int OC, int PV>
bool run_phased(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias, const float* input,
                float* output, int32_t oy_begin, int32_t oy_end, const Activation& act) {
  if (p.kernel != K || p.stride != 2 || p.in_c != 3) return false;
  if (phased_applies<V, K, kPhaseWidthSmall>(p)) {
    conv_rows_phased<V, K, 3, OC, PV, kPhaseWidthSmall>(p, w, bias, input, output, oy_begin, oy_end, act);
  } else if (phased_applies<V, K, kPhaseWidthLarge>(p)) {
    conv_rows_phased<V, K, 3, OC, PV, kPhaseWidthLarge>(p, w, bias, input, output, oy_begin, oy_end, act);
  } else {
    return false;
  }
  return true;
}

}  // namespace phased
}  // namespace kernels
}  // namespace spruce
