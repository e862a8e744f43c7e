// Depthwise convolution in CHW: portable kernel (any kernel size and stride)
// and dispatch. The AVX2 file takes 3x3 and 5x5 at stride 1 and 2.
#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

bool dwconv_chw_portable(const DwConvParams& p, const float* weights, const float* bias,
                         const float* input, float* output, int32_t c_begin, int32_t c_end,
                         const Activation& act) {
  const int32_t K = p.kernel, S = p.stride, in_h = p.in_h, in_w = p.in_w;
  const int32_t out_h = p.out_h(), out_w = p.out_w();
  const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
  for (int32_t c = c_begin; c < c_end; ++c) {
    const float* in = input + c * in_plane;
    const float* w = weights + static_cast<int64_t>(c) * K * K;
    const float b = bias != nullptr ? bias[c] : 0.0f;
    float* out = output + c * out_plane;
    for (int32_t oy = 0; oy < out_h; ++oy) {
      for (int32_t ox = 0; ox < out_w; ++ox) {
        float acc = b;
        for (int32_t ky = 0; ky < K; ++ky) {
          const int32_t iy = oy * S + ky - p.pad_top;
          if (iy < 0 || iy >= in_h) continue;
          for (int32_t kx = 0; kx < K; ++kx) {
            const int32_t ix = ox * S + kx - p.pad_left;
            if (ix < 0 || ix >= in_w) continue;
            acc += w[ky * K + kx] * in[static_cast<int64_t>(iy) * in_w + ix];
          }
        }
        out[static_cast<int64_t>(oy) * out_w + ox] = apply_activation(acc, act);
      }
    }
  }
  return true;
}

void dwconv_chw(const DwConvParams& p, const float* weights, const float* bias,
                const float* input, float* output, int32_t c_begin, int32_t c_end,
                const Activation& act, Isa isa) {
  if (c_begin >= c_end || p.out_h() <= 0 || p.out_w() <= 0) return;
#if SPRUCE_X86_KERNELS
  const Isa resolved = resolve_isa(isa);
  if (resolved == Isa::kAvx512 && dwconv_chw_avx512(p, weights, bias, input, output, c_begin, c_end, act)) {
    return;
  }
  if (resolved >= Isa::kAvx2 &&
      dwconv_chw_avx2(p, weights, bias, input, output, c_begin, c_end, act)) {
    return;
  }
#endif
  dwconv_chw_portable(p, weights, bias, input, output, c_begin, c_end, act);
}

bool dwconv_chw_swish(const DwConvParams& p, const float* weights, const float* bias,
                      const float* input, float* output, int32_t c_begin, int32_t c_end,
                      const Activation& act, Isa isa) {
  if (c_begin >= c_end || p.out_h() <= 0 || p.out_w() <= 0) return true;
#if SPRUCE_X86_KERNELS
  // The AVX-512 kernels only: with swish's constants the AVX2 kernels run out of
  // their 16 registers, and fused they were slower than the two passes.
  if (resolve_isa(isa) == Isa::kAvx512) {
    return dwconv_chw_avx512(p, weights, bias, input, output, c_begin, c_end, act, /*swish=*/true);
  }
#endif
  return false;
}

}  // namespace kernels
}  // namespace spruce
