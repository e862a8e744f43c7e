// Dense 1x1 convolution in CHW (a GEMM [N][K] x [K][P]): packing, portable
// kernel and dispatch.
//
// Weights are packed in panels of kGemmPanel output channels: for each k the
// panel's weights are contiguous ([N/panel][K][panel], zero padded), so the
// micro-kernel reads one short contiguous run per k and broadcasts it. Each
// output element is bias + sum over k in increasing order, then the residual,
// whatever the tile, so any split of the ranges gives identical results. The
// AVX2 and AVX-512 kernels share their blocking (gemm_simd.h).
#include <stdexcept>
#include <string>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

PackedDense pack_dense(const float* dense, int32_t rows, int32_t cols) {
  if (rows < 0 || cols < 0) {
    throw std::invalid_argument("pack_dense: rows and cols must be >= 0. Received: rows=" +
                                std::to_string(rows) + ", cols=" + std::to_string(cols));
  }
  PackedDense m;
  m.rows = rows;
  m.cols = cols;
  m.panel = kGemmPanel;
  const int64_t panels = (static_cast<int64_t>(rows) + kGemmPanel - 1) / kGemmPanel;
  m.data.assign(static_cast<size_t>(panels * cols * kGemmPanel), 0.0f);
  for (int32_t n = 0; n < rows; ++n) {
    float* panel = m.data.data() + (n / kGemmPanel) * static_cast<int64_t>(cols) * kGemmPanel;
    for (int32_t k = 0; k < cols; ++k) {
      panel[static_cast<int64_t>(k) * kGemmPanel + n % kGemmPanel] =
          dense[static_cast<int64_t>(n) * cols + k];
    }
  }
  return m;
}

void gemm_portable(const PackedDense& w, const float* bias, const float* input,
                   int64_t in_stride, float* output, int64_t out_stride, int32_t n_begin,
                   int32_t n_end, int64_t p_begin, int64_t p_end, const Activation& act,
                   const float* residual) {
  constexpr int kTile = 16;
  const int32_t K = w.cols;
  for (int64_t p = p_begin; p < p_end; p += kTile) {
    const int width = static_cast<int>(std::min<int64_t>(kTile, p_end - p));
    for (int32_t n = n_begin; n < n_end; ++n) {
      const float* wp = w.data.data() + (n / kGemmPanel) * static_cast<int64_t>(K) * kGemmPanel +
                        n % kGemmPanel;
      float acc[kTile];
      const float b = bias != nullptr ? bias[n] : 0.0f;
      for (int i = 0; i < kTile; ++i) acc[i] = b;
      for (int32_t k = 0; k < K; ++k) {
        const float wk = wp[static_cast<int64_t>(k) * kGemmPanel];
        const float* x = input + k * in_stride + p;
        if (width == kTile) {
          for (int i = 0; i < kTile; ++i) acc[i] += wk * x[i];
        } else {
          for (int i = 0; i < width; ++i) acc[i] += wk * x[i];
        }
      }
      float* o = output + n * out_stride + p;
      if (residual != nullptr) {
        const float* r = residual + n * out_stride + p;
        for (int i = 0; i < width; ++i) acc[i] += r[i];
      }
      for (int i = 0; i < width; ++i) o[i] = apply_activation(acc[i], act);
    }
  }
}

void gemm(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
          float* output, int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
          int64_t p_end, const Activation& act, const float* residual, Isa isa) {
  if (n_begin >= n_end || p_begin >= p_end) return;
#if SPRUCE_X86_KERNELS
  const Isa resolved = resolve_isa(isa);
  if (resolved == Isa::kAvx512) {
    gemm_avx512(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act, residual);
    return;
  }
  if (resolved == Isa::kAvx2) {
    gemm_avx2(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act, residual);
    return;
  }
#endif
  gemm_portable(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act,
                residual);
}

}  // namespace kernels
}  // namespace spruce
