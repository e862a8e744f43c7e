// The dense 1x1 GEMM's register blocking, written once over the vector width:
// gemm_avx2.cc and gemm_avx512.cc instantiate it with their vector traits
// (include only from those files, which are compiled for their ISA).
//
// A register block holds up to V::kRows output channels (broadcast weights) x
// NV vectors of pixels. The pixel tile is the outer loop, so its K x NV-vector
// slab of input is reused by every row block of the call. Each output is bias,
// then one FMA per input channel in increasing order, then the residual and
// the activation, so both ISAs and any split of the ranges give the same bits.
//
// V provides Vec, Mask, kLanes, kRows, load/store (plain and masked), set1,
// fma(x, w, acc) = x * w + acc, add, tail(n) (mask of the first n lanes),
// all(), and Epilogue (built from an Activation, applied to a Vec).
#pragma once

#include <algorithm>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {
namespace gemm_simd {

// R rows (weights wp[k * kGemmPanel + r]) x NV vectors at x / out.
template <class V, int R, int NV, bool kMasked>
inline void block(const float* wp, int32_t K, const float* bias, const float* x, int64_t in_stride, float* out,
                  int64_t out_stride, typename V::Mask mask, const typename V::Epilogue& ep_in,
                  const float* residual) {
  using Vec = typename V::Vec;
  const typename V::Epilogue ep = ep_in;  // bounds in registers, not reloaded after each store
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r) {
    const Vec b = V::set1(bias != nullptr ? bias[r] : 0.0f);
    for (int v = 0; v < NV; ++v) acc[r][v] = b;
  }
  for (int32_t k = 0; k < K; ++k) {
    Vec xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = kMasked ? V::load(x, mask) : V::load(x + V::kLanes * v);
    for (int r = 0; r < R; ++r) {
      const Vec wr = V::set1(wp[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(xv[v], wr, acc[r][v]);
    }
    x += in_stride;
    wp += kGemmPanel;
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * out_stride;
    const float* s = residual != nullptr ? residual + r * out_stride : nullptr;
    for (int v = 0; v < NV; ++v) {
      Vec y = acc[r][v];
      if (s != nullptr) y = V::add(y, kMasked ? V::load(s, mask) : V::load(s + V::kLanes * v));
      y = ep(y);
      if (kMasked) {
        V::store(o, y, mask);
      } else {
        V::store(o + V::kLanes * v, y);
      }
    }
  }
}

// Rows [n_begin, n_end) of one pixel tile (NV vectors at x / out), in blocks
// of up to V::kRows rows inside one packed panel.
template <class V, int NV, bool kMasked>
inline void column(const PackedDense& w, const float* bias, const float* x, int64_t in_stride, float* out,
                   int64_t out_stride, int32_t n_begin, int32_t n_end, typename V::Mask mask,
                   const typename V::Epilogue& ep, const float* residual) {
  const int32_t K = w.cols;
  for (int32_t n = n_begin; n < n_end;) {
    const int32_t r0 = n % kGemmPanel;
    const int32_t rows = std::min<int32_t>({V::kRows, kGemmPanel - r0, n_end - n});
    const float* wp = w.data.data() + (n / kGemmPanel) * static_cast<int64_t>(K) * kGemmPanel + r0;
    const float* b = bias != nullptr ? bias + n : nullptr;
    float* o = out + n * out_stride;
    const float* s = residual != nullptr ? residual + n * out_stride : nullptr;
#define SPRUCE_GEMM_BLOCK(R)                                                                          \
  case R:                                                                                             \
    block<V, (R <= V::kRows ? R : 1), NV, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep, s); \
    break;
    switch (rows) {
      SPRUCE_GEMM_BLOCK(8)
      SPRUCE_GEMM_BLOCK(7)
      SPRUCE_GEMM_BLOCK(6)
      SPRUCE_GEMM_BLOCK(5)
      SPRUCE_GEMM_BLOCK(4)
      SPRUCE_GEMM_BLOCK(3)
      SPRUCE_GEMM_BLOCK(2)
      default: block<V, 1, NV, kMasked>(wp, K, b, x, in_stride, o, out_stride, mask, ep, s);
    }
#undef SPRUCE_GEMM_BLOCK
    n += rows;
  }
}

// The whole call: pixel tiles of 3 vectors, then 2 or 1, then one masked vector.
template <class V>
void gemm(const PackedDense& w, const float* bias, const float* input, int64_t in_stride, float* output,
          int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end, const Activation& act,
          const float* residual) {
  const typename V::Epilogue ep(act);
  constexpr int64_t L = V::kLanes;
  const typename V::Mask all = V::all();
  auto at = [](const float* base, int64_t p) { return base != nullptr ? base + p : nullptr; };
  int64_t p = p_begin;
  for (; p + 3 * L <= p_end; p += 3 * L) {
    column<V, 3, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, all, ep,
                        at(residual, p));
  }
  const int64_t whole = (p_end - p) / L;
  if (whole == 2) {
    column<V, 2, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, all, ep,
                        at(residual, p));
  } else if (whole == 1) {
    column<V, 1, false>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end, all, ep,
                        at(residual, p));
  }
  p += L * whole;
  if (p < p_end) {
    column<V, 1, true>(w, bias, input + p, in_stride, output + p, out_stride, n_begin, n_end,
                       V::tail(static_cast<int>(p_end - p)), ep, at(residual, p));
  }
}

}  // namespace gemm_simd
}  // namespace kernels
}  // namespace spruce
