// Dense 1x1 convolution in CHW, AVX2 + FMA: gemm_simd.h's blocking on 8-float
// vectors, 4 output channels x 3 vectors per register block (12 accumulators,
// 3 input vectors and a broadcast weight of the 16 registers).
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/gemm_simd.h"
#include "kernels/simd_traits.h"

namespace spruce {
namespace kernels {
namespace {

struct Avx2Gemm : Avx2Vec {
  static constexpr int kRows = 4;
};

}  // namespace

void gemm_avx2(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
               float* output, int64_t out_stride, int32_t n_begin, int32_t n_end,
               int64_t p_begin, int64_t p_end, const Activation& act, const float* residual) {
  gemm_simd::gemm<Avx2Gemm>(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act,
                            residual);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
