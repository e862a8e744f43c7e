// Entry convolution HWC -> CHW, AVX2 + FMA.
//
// For one output row, a group of 8 output channels and 8 output columns, the
// kernel keeps 8 accumulators (one per column, lanes = channels): each tap
// loads the 8 channels' weights once and broadcasts one input value per column.
// An 8x8 transpose then turns the block into 8 channel rows of 8 columns for
// the CHW store. Blocks whose taps all fall inside the image skip the bounds
// checks; the border blocks check each tap (same arithmetic order).
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/conv_hwc2chw_phased.h"
#include "kernels/simd_avx2.h"
#include "kernels/simd_traits.h"
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

}  // namespace

void conv_hwc2chw_avx2(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                       const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                       const Activation& act) {
  // The stems of MobileNets and EfficientNets (3x3) and of ResNets (7x7).
  if (phased::run_phased<Avx2Vec, 3, 4, 2>(p, w, bias, input, output, oy_begin, oy_end, act)) return;
  if (phased::run_phased<Avx2Vec, 7, 4, 2>(p, w, bias, input, output, oy_begin, oy_end, act)) return;
  if (p.kernel == 3 && p.stride == 2 && p.in_c == 3) {
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
