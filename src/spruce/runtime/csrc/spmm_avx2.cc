// Sparse 1x1 convolution in CHW, AVX2 + FMA (see spmm.cc for the design).
//
// Pixel tiles of 32, 16 and 8 floats, then one masked vector for the tail.
// The input channels come in blocks (SparseMatrix::k_block) whose tile of input
// rows fits in L1; partial sums of a block wait in the output tile.
// Each output channel keeps two accumulator sets (even and odd nonzeros) so a
// 32-pixel tile has 8 independent FMA chains, enough to hide the FMA latency;
// matrices with few input channels use 64-pixel tiles and one set instead.
// Every tile width does the same arithmetic per element, so splitting the
// pixel or channel range never changes a result.
#if defined(__AVX2__) && defined(__FMA__)
#include "simd_avx2.h"

namespace spruce {
namespace kernels {
namespace {

template <int V, bool kMasked, bool kPaired>
inline void spmm_tile(const SparseMatrix& w, const float* bias, const char* in, float* out,
                      int64_t out_stride, int32_t n_begin, int32_t n_end, __m256i mask,
                      const avx2::Epilogue& epilogue) {
  const float* values = w.values.data();
  const int32_t* offsets = w.byte_offset.data();
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t* row_ptr = w.row_ptr.data() + static_cast<int64_t>(b) * (w.rows + 1);
    const bool first = b == 0, last = b + 1 == w.blocks;
    for (int32_t n = n_begin; n < n_end; ++n) {
      float* o = out + n * out_stride;
      __m256 acc0[V], acc1[V];
      if (first) {
        const __m256 bn = bias != nullptr ? _mm256_broadcast_ss(bias + n) : _mm256_setzero_ps();
        for (int v = 0; v < V; ++v) acc0[v] = bn;
      } else {
        for (int v = 0; v < V; ++v) acc0[v] = kMasked ? _mm256_maskload_ps(o, mask) : _mm256_loadu_ps(o + 8 * v);
      }
      for (int v = 0; v < V; ++v) acc1[v] = _mm256_setzero_ps();
      int32_t j = row_ptr[n];
      const int32_t end = row_ptr[n + 1];
      for (; kPaired && j + 1 < end; j += 2) {
        const __m256 w0 = _mm256_broadcast_ss(values + j);
        const __m256 w1 = _mm256_broadcast_ss(values + j + 1);
        const float* x0 = reinterpret_cast<const float*>(in + offsets[j]);
        const float* x1 = reinterpret_cast<const float*>(in + offsets[j + 1]);
        for (int v = 0; v < V; ++v) {
          const __m256 i0 = kMasked ? _mm256_maskload_ps(x0, mask) : _mm256_loadu_ps(x0 + 8 * v);
          const __m256 i1 = kMasked ? _mm256_maskload_ps(x1, mask) : _mm256_loadu_ps(x1 + 8 * v);
          acc0[v] = _mm256_fmadd_ps(i0, w0, acc0[v]);
          acc1[v] = _mm256_fmadd_ps(i1, w1, acc1[v]);
        }
      }
      for (; j < end; ++j) {  // unpaired mode, or the odd last nonzero
        const __m256 w0 = _mm256_broadcast_ss(values + j);
        const float* x0 = reinterpret_cast<const float*>(in + offsets[j]);
        for (int v = 0; v < V; ++v) {
          const __m256 i0 = kMasked ? _mm256_maskload_ps(x0, mask) : _mm256_loadu_ps(x0 + 8 * v);
          acc0[v] = _mm256_fmadd_ps(i0, w0, acc0[v]);
        }
      }
      for (int v = 0; v < V; ++v) {
        __m256 r = _mm256_add_ps(acc0[v], acc1[v]);
        if (last) r = epilogue(r);
        if (kMasked) {
          _mm256_maskstore_ps(o, mask, r);
        } else {
          _mm256_storeu_ps(o + 8 * v, r);
        }
      }
    }
  }
}

template <bool kPaired>
void spmm_tiles(const SparseMatrix& w, const float* bias, const float* input, float* output,
                int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
                int64_t p_end, const avx2::Epilogue& epilogue) {
  const __m256i all = _mm256_set1_epi32(-1);
  int64_t p = p_begin;
  auto in_at = [&](int64_t q) { return reinterpret_cast<const char*>(input + q); };
  if (!kPaired) {
    for (; p + 64 <= p_end; p += 64) {
      spmm_tile<8, false, kPaired>(w, bias, in_at(p), output + p, out_stride, n_begin, n_end, all, epilogue);
    }
  }
  for (; p + 32 <= p_end; p += 32) {
    spmm_tile<4, false, kPaired>(w, bias, in_at(p), output + p, out_stride, n_begin, n_end, all, epilogue);
  }
  if (p + 16 <= p_end) {
    spmm_tile<2, false, kPaired>(w, bias, in_at(p), output + p, out_stride, n_begin, n_end, all, epilogue);
    p += 16;
  }
  if (p + 8 <= p_end) {
    spmm_tile<1, false, kPaired>(w, bias, in_at(p), output + p, out_stride, n_begin, n_end, all, epilogue);
    p += 8;
  }
  if (p < p_end) {
    spmm_tile<1, true, kPaired>(w, bias, in_at(p), output + p, out_stride, n_begin, n_end,
                                avx2::tail_mask(static_cast<int>(p_end - p)), epilogue);
  }
}

}  // namespace

void spmm_avx2(const SparseMatrix& w, const float* bias, const float* input, float* output,
               int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
               int64_t p_end, const Activation& act) {
  const avx2::Epilogue epilogue(act);
  // Few input channels: 64-pixel tiles (8 independent accumulators per row,
  // one chain per element) amortise the per-row cost over more pixels; the
  // choice depends on the matrix only, so splits stay bit-identical.
  if (w.blocks == 1 && w.cols <= kSpmmWideTileMaxCols) {
    spmm_tiles<false>(w, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, epilogue);
  } else {
    spmm_tiles<true>(w, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, epilogue);
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
