// Sparse 1x1 convolution in CHW, AVX2 + FMA (see spmm.cc for the design).
//
// A tile is V vectors of 8 pixels (the last one masked when the range ends
// inside it, unless the caller padded the rows); for each output row it accumulates weight * input-row-slice over
// the row's nonzeros. Every nonzero costs V input loads and V FMAs plus a fixed
// overhead (weight broadcast, offset load), and every pass over a tile re-reads
// the whole weight stream, so the tile plan uses as few passes as it can:
// - matrices with more than kSpmmWideTileMaxCols inputs ("paired" mode) keep two
//   accumulator sets per row (even and odd nonzeros), 2V independent FMA chains;
//   they take 32-pixel tiles, and a range of up to 56 pixels (a 7x7 image) or
//   the remainder after the 32-pixel tiles runs as one tile of up to 7 vectors;
// - matrices with few inputs use one accumulator set and 64-pixel tiles (their
//   per-row cost dominates), the remainder again as one tile.
// The input channels come in blocks (SparseMatrix::k_block) whose tile of input
// rows fits in L1; partial sums of a block wait in the output tile.
// Every tile width does the same arithmetic per element, so splitting the
// pixel or channel range never changes a result.
#if defined(__AVX2__) && defined(__FMA__)
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/simd_avx2.h"

namespace spruce {
namespace kernels {
namespace {

// kMaskStore: the last vector is stored under `mask` (else the output rows
// are writable to the vector's end); kMaskLoads: it is loaded under it, input
// and partial sums (else both are readable to the vector's end).
template <int V, bool kMaskStore, bool kMaskLoads, bool kPaired>
void spmm_tile(const SparseMatrix& w, const float* values, const float* bias, const char* in, float* out,
               int64_t out_stride, int32_t n_begin, int32_t n_end, __m256i mask,
               const avx2::Epilogue& epilogue_in, const float* res, int64_t res_stride) {
  // A local copy keeps the activation's bounds in registers: stores through
  // intrinsics may alias anything reachable, so through the reference every
  // stored vector reloaded both bounds and the hard-swish flag (three loads in
  // a kernel bound by its loads).
  const avx2::Epilogue epilogue = epilogue_in;
  const int32_t* offsets = w.byte_offset.data();
  // Vector v of the tile at p; the last one is masked in a masked tile.
  auto load = [mask](const float* p, int v) {
    return (kMaskLoads && v == V - 1) ? _mm256_maskload_ps(p + 8 * v, mask) : _mm256_loadu_ps(p + 8 * v);
  };
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
        for (int v = 0; v < V; ++v) acc0[v] = load(o, v);
      }
      if (kPaired) {
        for (int v = 0; v < V; ++v) acc1[v] = _mm256_setzero_ps();
      }
      int32_t j = row_ptr[n];
      const int32_t end = row_ptr[n + 1];
      // Two nonzeros per step: their weights come in one 8-byte load and two
      // shuffles, their offsets in one 8-byte load, which leaves the load ports
      // to the input vectors.
      for (; j + 1 < end; j += 2) {
        double w01_bits;  // memcpy, as values + j is only 4-byte aligned; still one load
        std::memcpy(&w01_bits, values + j, sizeof(w01_bits));
        const __m128 w01 = _mm_castpd_ps(_mm_set_sd(w01_bits));
        const __m256 w0 = _mm256_broadcastss_ps(w01);
        const __m256 w1 = _mm256_broadcastss_ps(_mm_movehdup_ps(w01));
        uint64_t pair;
        std::memcpy(&pair, offsets + j, sizeof(pair));
        const float* x0 = reinterpret_cast<const float*>(in + static_cast<int32_t>(pair & 0xffffffffu));
        const float* x1 = reinterpret_cast<const float*>(in + static_cast<int32_t>(pair >> 32));
        if (kPaired) {
          for (int v = 0; v < V; ++v) {
            acc0[v] = _mm256_fmadd_ps(load(x0, v), w0, acc0[v]);
            acc1[v] = _mm256_fmadd_ps(load(x1, v), w1, acc1[v]);
          }
        } else {  // one accumulator set: nonzero j, then j + 1, as one at a time would
          for (int v = 0; v < V; ++v) acc0[v] = _mm256_fmadd_ps(load(x0, v), w0, acc0[v]);
          for (int v = 0; v < V; ++v) acc0[v] = _mm256_fmadd_ps(load(x1, v), w1, acc0[v]);
        }
      }
      for (; j < end; ++j) {  // the odd last nonzero
        const __m256 w0 = _mm256_broadcast_ss(values + j);
        const float* x0 = reinterpret_cast<const float*>(in + offsets[j]);
        for (int v = 0; v < V; ++v) acc0[v] = _mm256_fmadd_ps(load(x0, v), w0, acc0[v]);
      }
      // The residual's last vector under the mask, padded rows or not: the
      // skip tensor's rows end at the range (mask is all lanes when it does).
      const float* skip = last && res != nullptr ? res + n * res_stride : nullptr;
      for (int v = 0; v < V; ++v) {
        __m256 r = kPaired ? _mm256_add_ps(acc0[v], acc1[v]) : acc0[v];
        if (skip != nullptr) {
          r = _mm256_add_ps(r, v == V - 1 ? _mm256_maskload_ps(skip + 8 * v, mask) : _mm256_loadu_ps(skip + 8 * v));
        }
        if (last) r = epilogue(r);
        if (kMaskStore && v == V - 1) {
          _mm256_maskstore_ps(o + 8 * v, mask, r);
        } else {
          _mm256_storeu_ps(o + 8 * v, r);
        }
      }
    }
  }
}

using TileFn = void (*)(const SparseMatrix&, const float*, const float*, const char*, float*, int64_t, int32_t,
                        int32_t, __m256i, const avx2::Epilogue&, const float*, int64_t);

template <bool kPaired, int V>
constexpr TileFn tile_fn(bool mask_store, bool mask_loads) {
  return mask_store ? (mask_loads ? &spmm_tile<V, true, true, kPaired> : &spmm_tile<V, true, false, kPaired>)
                    : (mask_loads ? &spmm_tile<V, false, true, kPaired> : &spmm_tile<V, false, false, kPaired>);
}

// The tile of `vectors` (1..8) vectors, the last stored under a mask when
// `mask_store` and loaded under it when `mask_loads`.
template <bool kPaired>
TileFn pick_tile(int vectors, bool mask_store, bool mask_loads) {
  switch (vectors) {
    case 1: return tile_fn<kPaired, 1>(mask_store, mask_loads);
    case 2: return tile_fn<kPaired, 2>(mask_store, mask_loads);
    case 3: return tile_fn<kPaired, 3>(mask_store, mask_loads);
    case 4: return tile_fn<kPaired, 4>(mask_store, mask_loads);
    case 5: return tile_fn<kPaired, 5>(mask_store, mask_loads);
    case 6: return tile_fn<kPaired, 6>(mask_store, mask_loads);
    case 7: return tile_fn<kPaired, 7>(mask_store, mask_loads);
    default: return tile_fn<kPaired, 8>(mask_store, mask_loads);
  }
}

template <bool kPaired>
void spmm_tiles(const SparseMatrix& w, const float* values, const float* bias, const float* input, float* output,
                int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
                int64_t p_end, bool input_padded, bool output_padded, const avx2::Epilogue& epilogue,
                const float* res, int64_t res_stride) {
  // Paired tiles hold 2V accumulators: at most 7 vectors fit the 16 registers.
  constexpr int64_t kTile = kPaired ? kSpmmPairedTile : kSpmmWideTile;
  constexpr int64_t kMaxSinglePass = kPaired ? kSpmmPairedSinglePass : kSpmmWideTile;
  const __m256i all = _mm256_set1_epi32(-1);
  auto run = [&](int64_t p, int64_t width) {
    const int vectors = static_cast<int>((width + 7) / 8);
    const int tail = static_cast<int>(width % 8);
    pick_tile<kPaired>(vectors, tail != 0 && !output_padded, tail != 0 && !input_padded)(
        w, values, bias, reinterpret_cast<const char*>(input + p), output + p, out_stride, n_begin, n_end,
        tail != 0 ? avx2::tail_mask(tail) : all, epilogue, res != nullptr ? res + p : nullptr, res_stride);
  };
  int64_t p = p_begin;
  if (p_end - p > kMaxSinglePass) {
    for (; p + kTile <= p_end; p += kTile) {
      spmm_tile<kTile / 8, false, false, kPaired>(w, values, bias, reinterpret_cast<const char*>(input + p), output + p,
                                           out_stride, n_begin, n_end, all, epilogue,
                                           res != nullptr ? res + p : nullptr, res_stride);
    }
  }
  if (p < p_end) run(p, p_end - p);
}

// Row groups (SparseMatrix::group_rows == 4): a tile of V <= 3 vectors, 4 rows
// x V accumulators. Each entry loads its V input vectors once and feeds them to
// the 4 rows (4V FMAs), so the kernel is bound by the FMA ports rather than by
// one input load per FMA. Every element sums its entries in input-channel
// order into one accumulator, as the unpaired CSR tiles do, so rows that a
// call's range cuts out of a group (run on those) get the same results for
// finite inputs (a row's zero weight in a group entry adds 0 * x; an infinite
// x makes that NaN, as a dense product would). The engine cuts rows only at
// multiples of 4, so each row always takes the same path.
template <int V, bool kMaskStore, bool kMaskLoads>
void group_tile(const SparseMatrix& w, const float* values, const float* bias, const char* in, float* out,
                int64_t out_stride,
                int32_t g_begin, int32_t g_end, __m256i mask, const avx2::Epilogue& epilogue_in, const float* res,
                int64_t res_stride) {
  const avx2::Epilogue epilogue = epilogue_in;  // in registers, as in spmm_tile
  constexpr int R = kSpmmGroupRows;
  const int32_t groups = w.rows / R;
  const int32_t* offsets = w.group_offset.data();
  auto load = [mask](const float* p, int v) {
    return (kMaskLoads && v == V - 1) ? _mm256_maskload_ps(p + 8 * v, mask) : _mm256_loadu_ps(p + 8 * v);
  };
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t* group_ptr = w.group_ptr.data() + static_cast<int64_t>(b) * (groups + 1);
    const bool first = b == 0, last = b + 1 == w.blocks;
    for (int32_t g = g_begin; g < g_end; ++g) {
      float* o = out + static_cast<int64_t>(g) * R * out_stride;
      __m256 acc[R][V];
      for (int r = 0; r < R; ++r) {
        if (first) {
          const __m256 bn = bias != nullptr ? _mm256_broadcast_ss(bias + g * R + r) : _mm256_setzero_ps();
          for (int v = 0; v < V; ++v) acc[r][v] = bn;
        } else {
          for (int v = 0; v < V; ++v) acc[r][v] = load(o + r * out_stride, v);
        }
      }
      const int32_t end = group_ptr[g + 1];
      for (int32_t j = group_ptr[g]; j < end; ++j) {
        const float* x = reinterpret_cast<const float*>(in + offsets[j]);
        const float* wj = values + static_cast<int64_t>(j) * R;
        __m256 xv[V];
        for (int v = 0; v < V; ++v) xv[v] = load(x, v);
        for (int r = 0; r < R; ++r) {
          const __m256 wr = _mm256_broadcast_ss(wj + r);
          for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(xv[v], wr, acc[r][v]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const float* skip = last && res != nullptr ? res + (static_cast<int64_t>(g) * R + r) * res_stride : nullptr;
        for (int v = 0; v < V; ++v) {
          __m256 y = acc[r][v];
          if (skip != nullptr) {
            y = _mm256_add_ps(y, v == V - 1 ? _mm256_maskload_ps(skip + 8 * v, mask) : _mm256_loadu_ps(skip + 8 * v));
          }
          if (last) y = epilogue(y);
          if (kMaskStore && v == V - 1) {
            _mm256_maskstore_ps(o + r * out_stride + 8 * v, mask, y);
          } else {
            _mm256_storeu_ps(o + r * out_stride + 8 * v, y);
          }
        }
      }
    }
  }
}

using GroupTileFn = void (*)(const SparseMatrix&, const float*, const float*, const char*, float*, int64_t, int32_t,
                             int32_t,
                             __m256i, const avx2::Epilogue&, const float*, int64_t);

template <int V>
GroupTileFn group_tile_fn(bool mask_store, bool mask_loads) {
  return mask_store ? (mask_loads ? &group_tile<V, true, true> : &group_tile<V, true, false>)
                    : (mask_loads ? &group_tile<V, false, true> : &group_tile<V, false, false>);
}

void spmm_groups(const SparseMatrix& w, const float* values, const float* group_values, const float* bias,
                 const float* input, float* output, int64_t out_stride, int32_t n_begin, int32_t n_end,
                 int64_t p_begin, int64_t p_end, bool input_padded, bool output_padded,
                 const avx2::Epilogue& epilogue, const float* res, int64_t res_stride) {
  constexpr int32_t R = kSpmmGroupRows;
  const int32_t g_begin = (n_begin + R - 1) / R, g_end = std::max(g_begin, n_end / R);
  // Rows of partial groups at either end of the range: the unpaired CSR tiles
  // (same arithmetic per element).
  const int32_t head_end = std::min(n_end, g_begin * R), tail_begin = std::max(head_end, g_end * R);
  if (n_begin < head_end) {
    spmm_tiles<false>(w, values, bias, input, output, out_stride, n_begin, head_end, p_begin, p_end, input_padded,
                      output_padded, epilogue, res, res_stride);
  }
  if (tail_begin < n_end) {
    spmm_tiles<false>(w, values, bias, input, output, out_stride, tail_begin, n_end, p_begin, p_end, input_padded,
                      output_padded, epilogue, res, res_stride);
  }
  if (g_begin >= g_end) return;
  const __m256i all = _mm256_set1_epi32(-1);
  constexpr int64_t kTile = 24;
  int64_t p = p_begin;
  for (; p + kTile <= p_end; p += kTile) {
    group_tile<3, false, false>(w, group_values, bias, reinterpret_cast<const char*>(input + p), output + p, out_stride, g_begin,
                                g_end, all, epilogue, res != nullptr ? res + p : nullptr, res_stride);
  }
  if (p < p_end) {
    const int64_t width = p_end - p;
    const int tail = static_cast<int>(width % 8);
    const bool mask_store = tail != 0 && !output_padded, mask_loads = tail != 0 && !input_padded;
    const __m256i mask = tail != 0 ? avx2::tail_mask(tail) : all;
    GroupTileFn fn = width > 16 ? group_tile_fn<3>(mask_store, mask_loads)
                     : width > 8 ? group_tile_fn<2>(mask_store, mask_loads)
                                 : group_tile_fn<1>(mask_store, mask_loads);
    fn(w, group_values, bias, reinterpret_cast<const char*>(input + p), output + p, out_stride, g_begin, g_end, mask,
       epilogue, res != nullptr ? res + p : nullptr, res_stride);
  }
}

}  // namespace

void spmm_avx2(const SparseMatrix& w, const float* bias, const float* input, float* output,
               int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
               int64_t p_end, const Activation& act, bool input_padded, bool output_padded, const float* values,
               const float* group_values, const float* residual, int64_t residual_stride) {
  const avx2::Epilogue epilogue(act);
  // The mode depends on the matrix only, so splits stay bit-identical.
  if (w.group_rows == kSpmmGroupRows) {
    spmm_groups(w, values, group_values, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, input_padded, output_padded,
                epilogue, residual, residual_stride);
  } else if (w.blocks == 1 && w.cols <= kSpmmWideTileMaxCols) {
    spmm_tiles<false>(w, values, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, input_padded,
                      output_padded, epilogue, residual, residual_stride);
  } else {
    spmm_tiles<true>(w, values, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, input_padded,
                     output_padded, epilogue, residual, residual_stride);
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
