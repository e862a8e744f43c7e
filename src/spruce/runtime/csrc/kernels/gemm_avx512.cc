// Dense 1x1 convolution in CHW on AVX-512 (see gemm.cc for the packing), for
// CPUs that have it: twice the floats per FMA of the AVX2 kernel, as LiteRT's
// XNNPACK already uses there. The micro-kernel holds 8 output channels (two packed
// panels) x 3 vectors of 16 pixels (24 of the 32 registers), so each input vector
// feeds 8 FMAs; the pixel tile is the outer loop, as in gemm_avx2.cc. Every
// output takes the same operations in the same order as there, so it has the
// AVX2 kernel's bits. Called only when gemm() finds the CPU runs AVX-512.
#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {
namespace {

struct Epilogue512 {
  __m512 lo, hi;
  bool hard_swish;
};

template <int R, int V, bool kMasked>
inline void gemm_block512(const float* wp, int32_t K, const float* bias, const float* x,
                                        int64_t in_stride, float* out, int64_t out_stride, __mmask16 mask,
                                        const Epilogue512& ep) {
  const int64_t panel_floats = static_cast<int64_t>(K) * kGemmPanel;
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r) {
    const __m512 b = bias != nullptr ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
    for (int v = 0; v < V; ++v) acc[r][v] = b;
  }
  for (int32_t k = 0; k < K; ++k) {
    __m512 xv[V];
    for (int v = 0; v < V; ++v) xv[v] = kMasked ? _mm512_maskz_loadu_ps(mask, x) : _mm512_loadu_ps(x + 16 * v);
    for (int r = 0; r < R; ++r) {  // rows past the panel's 4 are in the next panel
      const __m512 wr = _mm512_set1_ps(wp[(r / kGemmPanel) * panel_floats + r % kGemmPanel]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(xv[v], wr, acc[r][v]);
    }
    x += in_stride;
    wp += kGemmPanel;
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * out_stride;
    for (int v = 0; v < V; ++v) {
      __m512 y = acc[r][v];
      if (ep.hard_swish) {  // as avx2::activate: x * clamp(x + 3, 0, 6), then * 1/6
        __m512 t = _mm512_add_ps(y, _mm512_set1_ps(3.0f));
        t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
        y = _mm512_mul_ps(_mm512_mul_ps(y, t), _mm512_set1_ps(1.0f / 6.0f));
      }
      y = _mm512_min_ps(_mm512_max_ps(y, ep.lo), ep.hi);
      if (kMasked) {
        _mm512_mask_storeu_ps(o, mask, y);
      } else {
        _mm512_storeu_ps(o + 16 * v, y);
      }
    }
  }
}

template <int V, bool kMasked>
inline void gemm_column512(const PackedDense& w, const float* bias, const float* x, int64_t in_stride,
                                         float* out, int64_t out_stride, int32_t n_begin, int32_t n_end,
                                         __mmask16 mask, const Epilogue512& ep) {
  const int32_t K = w.cols;
  for (int32_t n = n_begin; n < n_end;) {
    const int32_t r0 = n % kGemmPanel;
    const int32_t rows = std::min<int32_t>(kGemmPanel - r0, n_end - n);
    const float* wp = w.data.data() + (n / kGemmPanel) * static_cast<int64_t>(K) * kGemmPanel + r0;
    const float* b = bias != nullptr ? bias + n : nullptr;
    float* o = out + n * out_stride;
    if (r0 == 0 && n_end - n >= 2 * kGemmPanel) {  // two panels: each input vector feeds 8 rows
      gemm_block512<2 * kGemmPanel, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep);
      n += 2 * kGemmPanel;
      continue;
    }
    switch (rows) {
      case 4: gemm_block512<4, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep); break;
      case 3: gemm_block512<3, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep); break;
      case 2: gemm_block512<2, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep); break;
      default: gemm_block512<1, V, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep); break;
    }
    n += rows;
  }
}

void gemm_avx512_impl(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
                                    float* output, int64_t out_stride, int32_t n_begin, int32_t n_end,
                                    int64_t p_begin, int64_t p_end, const Activation& act) {
  const Epilogue512 ep{_mm512_set1_ps(act.min), _mm512_set1_ps(act.max), act.hard_swish};
  const __mmask16 all = 0xFFFF;
  int64_t p = p_begin;
  for (; p + 48 <= p_end; p += 48) {
    gemm_column512<3, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, all, ep);
  }
  const int64_t whole = (p_end - p) / 16;
  if (whole == 2) gemm_column512<2, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, all, ep);
  if (whole == 1) gemm_column512<1, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, all, ep);
  p += 16 * whole;
  if (p < p_end) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (p_end - p)) - 1);
    gemm_column512<1, true>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, tail, ep);
  }
}

}  // namespace

void gemm_avx512(const PackedDense& w, const float* bias, const float* input, int64_t in_stride, float* output,
                 int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end,
                 const Activation& act) {
  gemm_avx512_impl(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
