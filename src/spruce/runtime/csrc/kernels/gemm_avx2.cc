// Dense 1x1 convolution in CHW, AVX2 + FMA (see gemm.cc for the packing).
//
// Register-blocked micro-kernel: up to 4 output channels x 24 pixels (12
// accumulators, 3 input vectors, 1 broadcast weight). Pixel tiles of 24, 16, 8
// and one masked vector; the pixel tile is the outer loop so its K x 24 input
// slab is reused by every panel of output channels.
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/simd_avx2.h"

namespace spruce {
namespace kernels {
namespace {

template <int R, int V, bool kMasked>
inline void gemm_block(const float* wp, int32_t K, const float* bias, const float* x,
                       int64_t in_stride, float* out, int64_t out_stride, __m256i mask,
                       const avx2::Epilogue& epilogue_in) {
  const avx2::Epilogue epilogue = epilogue_in;  // bounds in registers, not reloaded after each store
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r) {
    const __m256 b = bias != nullptr ? _mm256_broadcast_ss(bias + r) : _mm256_setzero_ps();
    for (int v = 0; v < V; ++v) acc[r][v] = b;
  }
  for (int32_t k = 0; k < K; ++k) {
    __m256 xv[V];
    for (int v = 0; v < V; ++v) {
      xv[v] = kMasked ? _mm256_maskload_ps(x, mask) : _mm256_loadu_ps(x + 8 * v);
    }
    for (int r = 0; r < R; ++r) {
      const __m256 wr = _mm256_broadcast_ss(wp + r);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(xv[v], wr, acc[r][v]);
    }
    x += in_stride;
    wp += kGemmPanel;
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * out_stride;
    for (int v = 0; v < V; ++v) {
      const __m256 y = epilogue(acc[r][v]);
      if (kMasked) {
        _mm256_maskstore_ps(o, mask, y);
      } else {
        _mm256_storeu_ps(o + 8 * v, y);
      }
    }
  }
}

template <int V, bool kMasked>
inline void gemm_column(const PackedDense& w, const float* bias, const float* x,
                        int64_t in_stride, float* out, int64_t out_stride, int32_t n_begin,
                        int32_t n_end, __m256i mask, const avx2::Epilogue& epilogue) {
  const int32_t K = w.cols;
  for (int32_t n = n_begin; n < n_end;) {
    const int32_t r0 = n % kGemmPanel;
    const int32_t rows = std::min<int32_t>(kGemmPanel - r0, n_end - n);
    const float* wp = w.data.data() + (n / kGemmPanel) * static_cast<int64_t>(K) * kGemmPanel + r0;
    const float* b = bias != nullptr ? bias + n : nullptr;
    float* o = out + n * out_stride;
    switch (rows) {
      case 4: gemm_block<4, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, epilogue); break;
      case 3: gemm_block<3, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, epilogue); break;
      case 2: gemm_block<2, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, epilogue); break;
      default: gemm_block<1, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, epilogue); break;
    }
    n += rows;
  }
}

}  // namespace

static_assert(kGemmPanel == 4, "gemm_avx2 is written for panels of 4 output channels");

void gemm_avx2(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
               float* output, int64_t out_stride, int32_t n_begin, int32_t n_end,
               int64_t p_begin, int64_t p_end, const Activation& act) {
  const avx2::Epilogue epilogue(act);
  const __m256i all = _mm256_set1_epi32(-1);
  int64_t p = p_begin;
  for (; p + 24 <= p_end; p += 24) {
    gemm_column<3, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end,
                          all, epilogue);
  }
  if (p + 16 <= p_end) {
    gemm_column<2, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end,
                          all, epilogue);
    p += 16;
  }
  if (p + 8 <= p_end) {
    gemm_column<1, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end,
                          all, epilogue);
    p += 8;
  }
  if (p < p_end) {
    gemm_column<1, true>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end,
                         avx2::tail_mask(static_cast<int>(p_end - p)), epilogue);
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
