// Sparse 1x1 convolution in CHW, AVX-512 (see spmm.cc for the design and
// spmm_avx2.cc for the modes). Vectors hold 16 pixels and the last one of a
// range is loaded and stored under a mask, which costs AVX-512 nothing extra,
// so ranges need no padding and a pass can take any width: run_passes cuts a
// range into passes of near-equal width (kSpmm512*Vectors in kernels_impl.h),
// where AVX2 leaves a thin remainder tile that rereads all the weights. Every
// element sums its nonzeros in the AVX2 kernel's order (the same mode for the
// same matrix, two sets of partial sums in paired mode), so the results are
// the AVX2 kernel's bits.
#if defined(__AVX512F__) && defined(__FMA__)
#include <algorithm>
#include <cstdint>

#include "kernels/epilogue_avx512.h"

namespace spruce {
namespace kernels {
namespace {

// V vectors from `in` + 16 v; the last one under `mask` when kMask.
template <int V, bool kMask>
inline __m512 load(const float* p, int v, __mmask16 mask) {
  return (kMask && v == V - 1) ? _mm512_maskz_loadu_ps(mask, p + 16 * v) : _mm512_loadu_ps(p + 16 * v);
}

template <int V, bool kMask>
inline void store(float* p, int v, __mmask16 mask, __m512 y) {
  if (kMask && v == V - 1) {
    _mm512_mask_storeu_ps(p + 16 * v, mask, y);
  } else {
    _mm512_storeu_ps(p + 16 * v, y);
  }
}

// Asks for the line at p in a state that can be written (PREFETCHW, on every
// AVX-512 CPU).
inline void prefetch_write(const float* p) { asm volatile("prefetchw %0" : : "m"(*reinterpret_cast<const char*>(p))); }

template <int V, bool kMask, bool kPaired, bool kPrefetch>
void spmm_pass(const SparseMatrix& w, const float* values, const float* bias, const char* in, float* out,
               int64_t out_stride,
               int32_t n_begin, int32_t n_end, __mmask16 mask, const avx512::Epilogue& epilogue_in,
               const float* res, int64_t res_stride) {
  const avx512::Epilogue epilogue = epilogue_in;  // in registers (see spmm_avx2.cc)
  const int32_t* offsets = w.byte_offset.data();
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t* row_ptr = w.row_ptr.data() + static_cast<int64_t>(b) * (w.rows + 1);
    const bool first = b == 0, last = b + 1 == w.blocks;
    for (int32_t n = n_begin; n < n_end; ++n) {
      float* o = out + n * out_stride;
      // The first k-block writes output lines that were last used long ago.
      if (kPrefetch && first && n + kSpmm512PrefetchRows < n_end) {
        for (int v = 0; v < V; ++v) prefetch_write(o + kSpmm512PrefetchRows * out_stride + 16 * v);
      }
      __m512 acc0[V], acc1[V];
      if (first) {
        const __m512 bn = bias != nullptr ? _mm512_set1_ps(bias[n]) : _mm512_setzero_ps();
        for (int v = 0; v < V; ++v) acc0[v] = bn;
      } else {
        for (int v = 0; v < V; ++v) acc0[v] = load<V, kMask>(o, v, mask);
      }
      if (kPaired) {
        for (int v = 0; v < V; ++v) acc1[v] = _mm512_setzero_ps();
      }
      int32_t j = row_ptr[n];
      const int32_t end = row_ptr[n + 1];
      for (; j + 1 < end; j += 2) {
        const __m512 w0 = _mm512_set1_ps(values[j]);
        const __m512 w1 = _mm512_set1_ps(values[j + 1]);
        const float* x0 = reinterpret_cast<const float*>(in + offsets[j]);
        const float* x1 = reinterpret_cast<const float*>(in + offsets[j + 1]);
        if (kPaired) {
          for (int v = 0; v < V; ++v) {
            acc0[v] = _mm512_fmadd_ps(load<V, kMask>(x0, v, mask), w0, acc0[v]);
            acc1[v] = _mm512_fmadd_ps(load<V, kMask>(x1, v, mask), w1, acc1[v]);
          }
        } else {
          for (int v = 0; v < V; ++v) acc0[v] = _mm512_fmadd_ps(load<V, kMask>(x0, v, mask), w0, acc0[v]);
          for (int v = 0; v < V; ++v) acc0[v] = _mm512_fmadd_ps(load<V, kMask>(x1, v, mask), w1, acc0[v]);
        }
      }
      if (j < end) {
        const __m512 w0 = _mm512_set1_ps(values[j]);
        const float* x0 = reinterpret_cast<const float*>(in + offsets[j]);
        for (int v = 0; v < V; ++v) acc0[v] = _mm512_fmadd_ps(load<V, kMask>(x0, v, mask), w0, acc0[v]);
      }
      const float* skip = last && res != nullptr ? res + n * res_stride : nullptr;
      for (int v = 0; v < V; ++v) {
        __m512 r = kPaired ? _mm512_add_ps(acc0[v], acc1[v]) : acc0[v];
        if (skip != nullptr) r = _mm512_add_ps(r, load<V, kMask>(skip, v, mask));
        if (last) r = epilogue(r);
        store<V, kMask>(o, v, mask, r);
      }
    }
  }
}

// Row groups (SparseMatrix::group_rows): 4 rows x V accumulators, each
// entry's V input vectors loaded once for the 4 rows, in the AVX2 group
// kernel's order.
template <int V, bool kMask>
void group_pass(const SparseMatrix& w, const float* values, const float* bias, const char* in, float* out,
                int64_t out_stride,
                int32_t g_begin, int32_t g_end, __mmask16 mask, const avx512::Epilogue& epilogue_in,
                const float* res, int64_t res_stride) {
  const avx512::Epilogue epilogue = epilogue_in;
  constexpr int R = kSpmmGroupRows;
  const int32_t groups = w.rows / R;
  const int32_t* offsets = w.group_offset.data();
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t* group_ptr = w.group_ptr.data() + static_cast<int64_t>(b) * (groups + 1);
    const bool first = b == 0, last = b + 1 == w.blocks;
    for (int32_t g = g_begin; g < g_end; ++g) {
      float* o = out + static_cast<int64_t>(g) * R * out_stride;
      __m512 acc[R][V];
      for (int r = 0; r < R; ++r) {
        if (first) {
          const __m512 bn = bias != nullptr ? _mm512_set1_ps(bias[g * R + r]) : _mm512_setzero_ps();
          for (int v = 0; v < V; ++v) acc[r][v] = bn;
        } else {
          for (int v = 0; v < V; ++v) acc[r][v] = load<V, kMask>(o + r * out_stride, v, mask);
        }
      }
      const int32_t end = group_ptr[g + 1];
      for (int32_t j = group_ptr[g]; j < end; ++j) {
        const float* x = reinterpret_cast<const float*>(in + offsets[j]);
        const float* wj = values + static_cast<int64_t>(j) * R;
        __m512 xv[V];
        for (int v = 0; v < V; ++v) xv[v] = load<V, kMask>(x, v, mask);
        for (int r = 0; r < R; ++r) {
          const __m512 wr = _mm512_set1_ps(wj[r]);
          for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(xv[v], wr, acc[r][v]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const float* skip = last && res != nullptr ? res + (static_cast<int64_t>(g) * R + r) * res_stride : nullptr;
        for (int v = 0; v < V; ++v) {
          __m512 y = acc[r][v];
          if (skip != nullptr) y = _mm512_add_ps(y, load<V, kMask>(skip, v, mask));
          store<V, kMask>(o + r * out_stride, v, mask, last ? epilogue(y) : y);
        }
      }
    }
  }
}

using PassFn = void (*)(const SparseMatrix&, const float*, const float*, const char*, float*, int64_t, int32_t,
                        int32_t,
                        __mmask16, const avx512::Epilogue&, const float*, int64_t);

enum class Mode { kSingle, kPaired, kGroups };

template <Mode M, int V, bool kPrefetch>
PassFn pass_fn(bool masked) {
  if constexpr (M == Mode::kGroups) {
    return masked ? &group_pass<V, true> : &group_pass<V, false>;
  } else {
    constexpr bool kPaired = M == Mode::kPaired;
    return masked ? &spmm_pass<V, true, kPaired, kPrefetch> : &spmm_pass<V, false, kPaired, kPrefetch>;
  }
}

template <Mode M, bool kPrefetch>
PassFn pick_pass(int vectors, bool masked) {
  switch (vectors) {
    case 1: return pass_fn<M, 1, kPrefetch>(masked);
    case 2: return pass_fn<M, 2, kPrefetch>(masked);
    case 3: return pass_fn<M, 3, kPrefetch>(masked);
    case 4: return pass_fn<M, 4, kPrefetch>(masked);
    case 5: return pass_fn<M, 5, kPrefetch>(masked);
    case 6: return pass_fn<M, 6, kPrefetch>(masked);
    case 7: return pass_fn<M, 7, kPrefetch>(masked);
    default: return pass_fn<M, 8, kPrefetch>(masked);
  }
}

// Pixels [p_begin, p_end) in passes of at most max_vectors vectors, the range
// cut into passes of near-equal width (whole vectors but the last), so no pass
// is a thin remainder that re-reads all the weights for a few pixels.
// Output rows at least a page apart (planes of 32x32 pixels and more) get
// their lines asked for kSpmm512PrefetchRows rows ahead: the L2 streamer
// follows a stream within a page only, so each row's first stores would
// otherwise wait for its lines from L3 one after the other.
template <Mode M>
void run_passes(const SparseMatrix& w, const float* values, const float* bias, const float* input, float* output, int64_t out_stride,
                int32_t r_begin, int32_t r_end, int64_t p_begin, int64_t p_end, int max_vectors,
                const avx512::Epilogue& epilogue, const float* res, int64_t res_stride) {
  const int64_t vectors = (p_end - p_begin + 15) / 16;
  const int64_t passes = (vectors + max_vectors - 1) / max_vectors;
  // Row groups load each entry's inputs once for four rows: not prefetched.
  const bool prefetch = M != Mode::kGroups && out_stride * static_cast<int64_t>(sizeof(float)) >= 4096;
  int64_t p = p_begin;
  for (int64_t i = 0; i < passes; ++i) {
    const int64_t v = (vectors * (i + 1)) / passes - (vectors * i) / passes;
    const int64_t width = std::min<int64_t>(16 * v, p_end - p);
    const int tail = static_cast<int>(width % 16);
    const PassFn pass = prefetch ? pick_pass<M, true>(static_cast<int>(v), tail != 0)
                                 : pick_pass<M, false>(static_cast<int>(v), tail != 0);
    pass(w, values, bias, reinterpret_cast<const char*>(input + p), output + p, out_stride, r_begin, r_end,
         avx512::tail_mask(tail), epilogue, res != nullptr ? res + p : nullptr, res_stride);
    p += width;
  }
}

}  // namespace

void spmm_avx512(const SparseMatrix& w, const float* bias, const float* input, float* output, int64_t out_stride,
                 int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end, const Activation& act,
                 const float* values, const float* group_values, const float* residual, int64_t residual_stride) {
  const avx512::Epilogue epilogue(act);
  // The mode depends on the matrix only (as in spmm_avx2), so splits stay
  // bit-identical and match the AVX2 kernel.
  if (w.group_rows == kSpmmGroupRows) {
    constexpr int32_t R = kSpmmGroupRows;
    const int32_t g_begin = (n_begin + R - 1) / R, g_end = std::max(g_begin, n_end / R);
    const int32_t head_end = std::min(n_end, g_begin * R), tail_begin = std::max(head_end, g_end * R);
    if (n_begin < head_end) {
      run_passes<Mode::kSingle>(w, values, bias, input, output, out_stride, n_begin, head_end, p_begin, p_end,
                                kSpmm512SingleVectors, epilogue, residual, residual_stride);
    }
    if (tail_begin < n_end) {
      run_passes<Mode::kSingle>(w, values, bias, input, output, out_stride, tail_begin, n_end, p_begin, p_end,
                                kSpmm512SingleVectors, epilogue, residual, residual_stride);
    }
    if (g_begin < g_end) {
      run_passes<Mode::kGroups>(w, group_values, bias, input, output, out_stride, g_begin, g_end, p_begin, p_end,
                                kSpmm512GroupVectors, epilogue, residual, residual_stride);
    }
  } else if (w.blocks == 1 && w.cols <= kSpmmWideTileMaxCols) {
    run_passes<Mode::kSingle>(w, values, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end,
                              kSpmm512SingleVectors, epilogue, residual, residual_stride);
  } else {
    run_passes<Mode::kPaired>(w, values, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end,
                              kSpmm512PairedVectors, epilogue, residual, residual_stride);
  }
}

// Sixteen weights a step: one gather of their channels' factors.
void spmm_scale_values_avx512(const float* values, const int32_t* cols, const float* scale, float* out, int64_t n) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 s = _mm512_i32gather_ps(_mm512_loadu_si512(cols + j), scale, 4);
    _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_loadu_ps(values + j), s));
  }
  if (j < n) {
    const __mmask16 m = avx512::tail_mask(static_cast<int>(n - j));
    const __m512 s = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_maskz_loadu_epi32(m, cols + j), scale, 4);
    _mm512_mask_storeu_ps(out + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, values + j), s));
  }
}

// Rows of 24-240 nonzeros (90% sparse squeeze-excite and classifier convs):
// two 16-lane gathers per step, a masked one for the rest.
void spmv_avx512(const float* values, const int32_t* cols, const int64_t* row_ptr, const float* x, float* y,
                 int64_t n_begin, int64_t n_end) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    int64_t j = row_ptr[n];
    const int64_t end = row_ptr[n + 1];
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (; j + 32 <= end; j += 32) {
      const __m512i i0 = _mm512_loadu_si512(cols + j), i1 = _mm512_loadu_si512(cols + j + 16);
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(values + j), _mm512_i32gather_ps(i0, x, 4), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(values + j + 16), _mm512_i32gather_ps(i1, x, 4), acc1);
    }
    for (; j < end; j += 16) {
      const __mmask16 m = avx512::tail_mask(static_cast<int>(std::min<int64_t>(16, end - j)));
      const __m512i idx = _mm512_maskz_loadu_epi32(m, cols + j);
      const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x, 4);
      acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, values + j), g, acc0);
    }
    y[n] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
