// Entry convolution HWC -> CHW, AVX2 + FMA.
//
// For one output row, a group of 8 output channels and 8 output columns, the
// kernel keeps 8 accumulators (one per column, lanes = channels): each tap
// loads the 8 channels' weights once and broadcasts one input value per column.
// An 8x8 transpose then turns the block into 8 channel rows of 8 columns for
// the CHW store. Blocks whose taps all fall inside the image skip the bounds
// checks; the border blocks check each tap (same arithmetic order).
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/simd_avx2.h"
#include <climits>

namespace spruce {
namespace kernels {
namespace {

inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// KT, ST, CT: kernel size, stride and input channels fixed at compile time
// (0 = read from p), so the common 3x3/2 RGB case gets constant addressing.
template <int KT, int ST, int CT, bool kChecked>
__attribute__((always_inline)) inline void conv_block(const ConvHwcParams& p, const float* wg,
                                                      __m256 bias8, const float* input, int32_t oy,
                                                      int32_t ox0, int32_t cols, __m256 acc[8]) {
  const int32_t K = KT ? KT : p.kernel, S = ST ? ST : p.stride, C = CT ? CT : p.in_c;
  for (int j = 0; j < 8; ++j) acc[j] = bias8;
  for (int32_t ky = 0; ky < K; ++ky) {
    const int32_t iy = oy * S + ky - p.pad_top;
    if (iy < 0 || iy >= p.in_h) continue;
    const float* row = input + static_cast<int64_t>(iy) * p.in_w * C;
    for (int32_t kx = 0; kx < K; ++kx) {
      const float* wt = wg + static_cast<int64_t>(ky * K + kx) * C * kConvHwcGroup;
      const int32_t ix0 = ox0 * S + kx - p.pad_left;
      for (int32_t c = 0; c < C; ++c) {
        const __m256 wv = _mm256_loadu_ps(wt + c * kConvHwcGroup);
        for (int j = 0; j < 8; ++j) {
          const int32_t ix = ix0 + j * S;
          if (kChecked && (j >= cols || ix < 0 || ix >= p.in_w)) continue;
          acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(row + static_cast<int64_t>(ix) * C + c), wv,
                                   acc[j]);
        }
      }
    }
  }
}

static_assert(kConvHwcGroup == 8, "conv_hwc2chw_avx2 is written for groups of 8 output channels");

template <int KT, int ST, int CT>
void conv_rows(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
               const float* input, float* output, int32_t oy_begin, int32_t oy_end,
               const Activation& act) {
  const avx2::Epilogue epilogue(act);
  const int32_t K = p.kernel, S = p.stride, out_w = p.out_w();
  const int64_t out_plane = static_cast<int64_t>(p.out_h()) * out_w;
  const int64_t group_size = static_cast<int64_t>(K) * K * p.in_c * kConvHwcGroup;
  // Columns whose taps are all inside [0, in_w).
  const int32_t ox_lo = (p.pad_left + S - 1) / S;
  const int32_t ox_hi = p.in_w - K + p.pad_left >= 0 ? (p.in_w - K + p.pad_left) / S + 1 : 0;
  alignas(32) float bias_pad[kConvHwcGroup];
  alignas(32) float last[8];
  for (int32_t g = 0; g * kConvHwcGroup < p.out_c; ++g) {
    const int32_t o0 = g * kConvHwcGroup;
    const int32_t channels = std::min<int32_t>(kConvHwcGroup, p.out_c - o0);
    for (int i = 0; i < kConvHwcGroup; ++i) bias_pad[i] = (bias != nullptr && i < channels) ? bias[o0 + i] : 0.0f;
    const __m256 bias8 = _mm256_load_ps(bias_pad);
    const float* wg = w.data.data() + g * group_size;
    for (int32_t oy = oy_begin; oy < oy_end; ++oy) {
      for (int32_t ox = 0; ox < out_w; ox += 8) {
        const int32_t cols = std::min<int32_t>(8, out_w - ox);
        __m256 acc[8];
        if (cols == 8 && ox >= ox_lo && ox + 8 <= ox_hi) {
          conv_block<KT, ST, CT, false>(p, wg, bias8, input, oy, ox, cols, acc);
        } else {
          conv_block<KT, ST, CT, true>(p, wg, bias8, input, oy, ox, cols, acc);
        }
        transpose8(acc);
        for (int32_t i = 0; i < channels; ++i) {
          float* o = output + (o0 + i) * out_plane + static_cast<int64_t>(oy) * out_w + ox;
          const __m256 y = epilogue(acc[i]);
          if (cols == 8) {
            _mm256_storeu_ps(o, y);
          } else {
            _mm256_store_ps(last, y);  // no masked store: slow on AMD
            for (int32_t j = 0; j < cols; ++j) o[j] = last[j];
          }
        }
      }
    }
  }
}

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

// Phase rows of W floats usable: every read (last vector's lanes + K / 2) and
// every data column fit.
template <int K, int W>
bool phased_applies(const ConvHwcParams& p) {
  const int32_t vectors = (p.out_w() + 7) / 8;
  return vectors * 8 + K / 2 <= W && (p.pad_left + p.in_w + 1) / 2 <= W && p.out_c <= 1024;
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

template <int K, int C, int OC, int PV, int W>
__attribute__((always_inline)) inline void phase_tile(const float* const rows[K], int32_t ox,
                                                      const float* wt, const float* b,
                                                      __m256 acc[OC][PV]) {
  for (int o = 0; o < OC; ++o) {
    const __m256 bv = _mm256_broadcast_ss(b + o);
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
        __m256 x[PV];
        for (int v = 0; v < PV; ++v) x[v] = _mm256_loadu_ps(row + v * 8);
        for (int o = 0; o < OC; ++o) {
          const __m256 wv = _mm256_broadcast_ss(w + o);
          for (int v = 0; v < PV; ++v) acc[o][v] = _mm256_fmadd_ps(x[v], wv, acc[o][v]);
        }
      }
    }
  }
}

template <int K, int C, int OC, int PV, int W>
void conv_rows_phased(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                      const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                      const Activation& act) {
  const avx2::Epilogue epilogue(act);
  const int32_t out_w = p.out_w(), vectors = (out_w + 7) / 8;
  const int64_t out_plane = static_cast<int64_t>(p.out_h()) * out_w;
  const int64_t group_size = static_cast<int64_t>(K) * K * C * kConvHwcGroup;
  // Bias padded to whole tiles.
  alignas(32) float bias_pad[1024 + 8];
  for (int32_t o = 0; o < p.out_c + OC; ++o) bias_pad[o] = (bias != nullptr && o < p.out_c) ? bias[o] : 0.0f;
  // Ring of K input rows' phase rows (+ 8: garbage lanes of a last vector may read past).
  // Only the floats of a phase row that loads reach need zeros to start with
  // (fill_phase_row writes the data columns): zeroing all W of each row was a
  // tenth of a small image's conv.
  alignas(32) float ring[K * C * 2 * W + 8];
  const int32_t reached = std::min<int32_t>(W, vectors * 8 + K / 2);
  for (int r = 0; r < K * C * 2; ++r) std::fill(ring + r * W, ring + r * W + reached, 0.0f);
  std::fill(ring + K * C * 2 * W, ring + K * C * 2 * W + 8, 0.0f);
  int32_t ring_row[K];  // input row held by each slot
  for (int k = 0; k < K; ++k) ring_row[k] = INT32_MIN;
  alignas(32) float last[8];
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
      auto store = [&](int o, int32_t ox, __m256 y) {
        float* dst = output + (o0 + o) * out_plane + static_cast<int64_t>(oy) * out_w + ox;
        y = epilogue(y);
        if (ox + 8 <= out_w) {
          _mm256_storeu_ps(dst, y);
        } else {
          _mm256_store_ps(last, y);
          for (int32_t j = 0; j < out_w - ox; ++j) dst[j] = last[j];
        }
      };
      int32_t v = 0;
      for (; v + PV <= vectors; v += PV) {
        __m256 acc[OC][PV];
        // Opaque to the optimizer, so it cannot hoist all K * K * C * OC weight
        // addresses out of this loop onto the stack (each broadcast then took a
        // second load for its address).
        const float* wt_tile = wt;
        __asm__("" : "+r"(wt_tile));
        phase_tile<K, C, OC, PV, W>(rows, v * 8, wt_tile, bias_pad + o0, acc);
        if (oc == OC && (v + PV) * 8 <= out_w) {
          // Whole tile: loops of compile-time length keep acc in registers (a
          // run-time channel count sends it to the stack).
          float* dst = output + o0 * out_plane + static_cast<int64_t>(oy) * out_w + v * 8;
          for (int o = 0; o < OC; ++o) {
            for (int j = 0; j < PV; ++j) _mm256_storeu_ps(dst + o * out_plane + j * 8, epilogue(acc[o][j]));
          }
        } else {
          for (int o = 0; o < oc; ++o) {
            for (int j = 0; j < PV; ++j) store(o, (v + j) * 8, acc[o][j]);
          }
        }
      }
      for (; v < vectors; ++v) {
        __m256 acc[OC][1];
        phase_tile<K, C, OC, 1, W>(rows, v * 8, wt, bias_pad + o0, acc);
        for (int o = 0; o < oc; ++o) store(o, v * 8, acc[o][0]);
      }
    }
  }
}

}  // namespace

void conv_hwc2chw_avx2(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                       const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                       const Activation& act) {
  if (p.kernel == 3 && p.stride == 2 && p.in_c == 3 && phased_applies<3, kPhaseWidthSmall>(p)) {
    conv_rows_phased<3, 3, 4, 2, kPhaseWidthSmall>(p, w, bias, input, output, oy_begin, oy_end, act);
  } else if (p.kernel == 3 && p.stride == 2 && p.in_c == 3 && phased_applies<3, kPhaseWidthLarge>(p)) {
    conv_rows_phased<3, 3, 4, 2, kPhaseWidthLarge>(p, w, bias, input, output, oy_begin, oy_end, act);
  } else if (p.kernel == 3 && p.stride == 2 && p.in_c == 3) {
    conv_rows<3, 2, 3>(p, w, bias, input, output, oy_begin, oy_end, act);
  } else if (p.kernel == 3 && p.stride == 1 && p.in_c == 3) {
    conv_rows<3, 1, 3>(p, w, bias, input, output, oy_begin, oy_end, act);
  } else {
    conv_rows<0, 0, 0>(p, w, bias, input, output, oy_begin, oy_end, act);
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
