// Entry convolution: an HWC image with few channels in, CHW out. Packing,
// portable kernel and dispatch.
//
// Weights (TFLite OHWI) are packed in groups of kConvHwcGroup output channels,
// [group][ky][kx][in_c][group lane], zero padded, so the AVX2 kernel loads the
// weights of one tap for 8 output channels with one vector load.
#include <stdexcept>
#include <string>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

PackedConvHwc pack_conv_hwc2chw(const float* ohwi, int32_t out_c, int32_t kernel, int32_t in_c) {
  if (out_c < 0 || kernel <= 0 || in_c <= 0) {
    throw std::invalid_argument(
        "pack_conv_hwc2chw: out_c must be >= 0, kernel and in_c > 0. Received: out_c=" +
        std::to_string(out_c) + ", kernel=" + std::to_string(kernel) + ", in_c=" + std::to_string(in_c));
  }
  PackedConvHwc w;
  w.out_c = out_c;
  w.kernel = kernel;
  w.in_c = in_c;
  w.group = kConvHwcGroup;
  const int64_t taps = static_cast<int64_t>(kernel) * kernel * in_c;
  const int64_t groups = (out_c + kConvHwcGroup - 1) / kConvHwcGroup;
  w.data.assign(static_cast<size_t>(groups * taps * kConvHwcGroup), 0.0f);
  for (int32_t o = 0; o < out_c; ++o) {
    for (int64_t t = 0; t < taps; ++t) {
      w.data[((o / kConvHwcGroup) * taps + t) * kConvHwcGroup + o % kConvHwcGroup] = ohwi[o * taps + t];
    }
  }
  return w;
}

void conv_hwc2chw_portable(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                           const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                           const Activation& act) {
  const int32_t K = p.kernel, S = p.stride, C = p.in_c;
  const int32_t out_w = p.out_w();
  const int64_t out_plane = static_cast<int64_t>(p.out_h()) * out_w;
  const int64_t taps = static_cast<int64_t>(K) * K * C;
  for (int32_t o = 0; o < p.out_c; ++o) {
    const float* wg = w.data.data() + (o / kConvHwcGroup) * taps * kConvHwcGroup + o % kConvHwcGroup;
    const float b = bias != nullptr ? bias[o] : 0.0f;
    for (int32_t oy = oy_begin; oy < oy_end; ++oy) {
      float* orow = output + o * out_plane + static_cast<int64_t>(oy) * out_w;
      for (int32_t ox = 0; ox < out_w; ++ox) {
        float acc = b;
        for (int32_t ky = 0; ky < K; ++ky) {
          const int32_t iy = oy * S + ky - p.pad_top;
          if (iy < 0 || iy >= p.in_h) continue;
          for (int32_t kx = 0; kx < K; ++kx) {
            const int32_t ix = ox * S + kx - p.pad_left;
            if (ix < 0 || ix >= p.in_w) continue;
            const float* x = input + (static_cast<int64_t>(iy) * p.in_w + ix) * C;
            const float* wt = wg + ((ky * K + kx) * static_cast<int64_t>(C)) * kConvHwcGroup;
            for (int32_t c = 0; c < C; ++c) acc += wt[c * kConvHwcGroup] * x[c];
          }
        }
        orow[ox] = apply_activation(acc, act);
      }
    }
  }
}

void conv_hwc2chw(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                  const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                  const Activation& act, Isa isa) {
  if (oy_begin >= oy_end || p.out_w() <= 0 || p.out_c <= 0) return;
#if SPRUCE_X86_KERNELS
  const Isa resolved = resolve_isa(isa);
  if (resolved == Isa::kAvx512 && conv_hwc2chw_avx512(p, w, bias, input, output, oy_begin, oy_end, act)) return;
  if (resolved >= Isa::kAvx2) {
    conv_hwc2chw_avx2(p, w, bias, input, output, oy_begin, oy_end, act);
    return;
  }
#endif
  conv_hwc2chw_portable(p, w, bias, input, output, oy_begin, oy_end, act);
}

}  // namespace kernels
}  // namespace spruce
