// Dense 1x1 convolution in CHW on AVX-512: gemm_simd.h's blocking on 16-float
// vectors, for CPUs that have it (LiteRT's XNNPACK uses it there too). A
// register block holds 8 output channels x 3 vectors (24 of the 32 registers),
// so each input vector feeds 8 FMAs. Every output takes the AVX2 kernel's
// operations in its order, so it has that kernel's bits. Called only when
// gemm() finds the CPU runs AVX-512.
#if defined(__AVX512F__) && defined(__FMA__)
#include "kernels/gemm_simd.h"
#include "kernels/simd_traits.h"

namespace spruce {
namespace kernels {
namespace {

struct Avx512Gemm : Avx512Vec {
  static constexpr int kRows = 8;
};

}  // namespace

void gemm_avx512(const PackedDense& w, const float* bias, const float* input, int64_t in_stride, float* output,
                 int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end,
                 const Activation& act, const float* residual) {
  gemm_simd::gemm<Avx512Gemm>(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act,
                              residual);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
