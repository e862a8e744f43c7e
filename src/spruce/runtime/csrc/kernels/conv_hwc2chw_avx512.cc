// Entry convolution HWC -> CHW on AVX-512: the phased path of
// conv_hwc2chw_phased.h (3x3 and 7x7 at stride 2 on RGB, the stems of
// MobileNets, EfficientNets and ResNets) on 16-float vectors, 8 output channels
// x 2 vectors per tile (16 of the 32 registers accumulate). Every output sums
// bias, then taps in the AVX2 kernel's order, so it has that kernel's bits.
#if defined(__AVX512F__) && defined(__FMA__)
#include "kernels/conv_hwc2chw_phased.h"
#include "kernels/simd_traits.h"

namespace spruce {
namespace kernels {

bool conv_hwc2chw_avx512(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias, const float* input,
                         float* output, int32_t oy_begin, int32_t oy_end, const Activation& act) {
  return phased::run_phased<Avx512Vec, 3, 8, 2>(p, w, bias, input, output, oy_begin, oy_end, act) ||
         phased::run_phased<Avx512Vec, 7, 8, 2>(p, w, bias, input, output, oy_begin, oy_end, act);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
