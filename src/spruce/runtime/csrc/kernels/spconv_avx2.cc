// Sparse KxK convolution in CHW, AVX2 + FMA (see spconv.cc for the design).
//
// A tile is R output rows x V vectors of 8 columns, R * V <= 8 accumulators.
// For each nonzero the kernel broadcasts the weight once and does R * V FMAs,
// each on a contiguous 8-column slice of one phase plane (row r of the tile
// reads plane row r further on). A row's last vector is loaded and stored
// under a mask where the row ends inside it, so the output is written exactly;
// the packed input is readable to every vector's end.
#if defined(__AVX2__) && defined(__FMA__)
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/simd_avx2.h"
#include "kernels/spconv.h"

namespace spruce {
namespace kernels {
namespace {

template <int R, int V>
void spconv_tile(const SparseConv& w, const float* bias, const char* in, float* out, int64_t out_stride,
                 int32_t n_begin, int32_t n_end, bool masked, __m256i mask, const avx2::Epilogue& epilogue_in) {
  // A local copy keeps the bounds in registers (stores through intrinsics may
  // alias anything a reference reaches; see spmm_avx2.cc).
  const avx2::Epilogue epilogue = epilogue_in;
  const int64_t in_row = static_cast<int64_t>(w.plane_w) * static_cast<int64_t>(sizeof(float));
  const int64_t out_row = w.shape.out_w();
  const float* values = w.values.data();
  const int32_t* offsets = w.byte_offset.data();
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t* row_ptr = w.row_ptr.data() + static_cast<int64_t>(b) * (w.shape.out_c + 1);
    const bool first = b == 0, last = b + 1 == w.blocks;
    for (int32_t n = n_begin; n < n_end; ++n) {
      float* o = out + n * out_stride;
      __m256 acc[R][V];
      if (first) {
        const __m256 bn = bias != nullptr ? _mm256_broadcast_ss(bias + n) : _mm256_setzero_ps();
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < V; ++v) acc[r][v] = bn;
      } else {
        for (int r = 0; r < R; ++r) {
          for (int v = 0; v < V; ++v) {
            const float* p = o + r * out_row + 8 * v;
            acc[r][v] = (masked && v == V - 1) ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
          }
        }
      }
      auto multiply_add = [&](const char* x, __m256 wj) {
        for (int r = 0; r < R; ++r) {
          const float* xr = reinterpret_cast<const float*>(x + r * in_row);
          for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8 * v), wj, acc[r][v]);
        }
      };
      int32_t j = row_ptr[n];
      const int32_t end = row_ptr[n + 1];
      // Two nonzeros per step, in order: their weights in one 8-byte load, their
      // offsets in another, which leaves the load ports to the input vectors.
      for (; j + 1 < end; j += 2) {
        double w01_bits;  // memcpy, as values + j is only 4-byte aligned; still one load
        std::memcpy(&w01_bits, values + j, sizeof(w01_bits));
        const __m128 w01 = _mm_castpd_ps(_mm_set_sd(w01_bits));
        uint64_t pair;
        std::memcpy(&pair, offsets + j, sizeof(pair));
        multiply_add(in + static_cast<int32_t>(pair & 0xffffffffu), _mm256_broadcastss_ps(w01));
        multiply_add(in + static_cast<int32_t>(pair >> 32), _mm256_broadcastss_ps(_mm_movehdup_ps(w01)));
      }
      if (j < end) multiply_add(in + offsets[j], _mm256_broadcast_ss(values + j));
      for (int r = 0; r < R; ++r) {
        for (int v = 0; v < V; ++v) {
          const __m256 y = last ? epilogue(acc[r][v]) : acc[r][v];
          float* p = o + r * out_row + 8 * v;
          if (masked && v == V - 1) {
            _mm256_maskstore_ps(p, mask, y);
          } else {
            _mm256_storeu_ps(p, y);
          }
        }
      }
    }
  }
}

using TileFn = void (*)(const SparseConv&, const float*, const char*, float*, int64_t, int32_t, int32_t, bool,
                        __m256i, const avx2::Epilogue&);

// The tile of R rows x V vectors; none past 8 accumulators (the weight and the
// loads need the other registers).
template <int R, int V>
constexpr TileFn tile_fn() {
  if constexpr (R * V <= 8) {
    return &spconv_tile<R, V>;
  } else {
    return nullptr;
  }
}

template <int V>
TileFn tile_for_rows(int rows) {
  switch (rows) {
    case 1: return tile_fn<1, V>();
    case 2: return tile_fn<2, V>();
    case 3: return tile_fn<3, V>();
    case 4: return tile_fn<4, V>();
    case 5: return tile_fn<5, V>();
    case 6: return tile_fn<6, V>();
    case 7: return tile_fn<7, V>();
    default: return tile_fn<8, V>();
  }
}

TileFn pick_tile(int rows, int vectors) {
  switch (vectors) {
    case 1: return tile_for_rows<1>(rows);
    case 2: return tile_for_rows<2>(rows);
    case 3: return tile_for_rows<3>(rows);
    case 4: return tile_for_rows<4>(rows);
    case 5: return tile_for_rows<5>(rows);
    case 6: return tile_for_rows<6>(rows);
    case 7: return tile_for_rows<7>(rows);
    default: return tile_for_rows<8>(rows);
  }
}

}  // namespace

void spconv_avx2(const SparseConv& w, const float* bias, const float* packed, float* output, int64_t out_stride,
                 int32_t n_begin, int32_t n_end, int32_t oy_begin, int32_t oy_end, const Activation& act) {
  const avx2::Epilogue epilogue(act);
  const int32_t out_w = w.shape.out_w();
  const int32_t chunk = 8 * w.tile_vectors;
  const char* in = reinterpret_cast<const char*>(packed);
  for (int32_t oy0 = oy_begin; oy0 < oy_end; oy0 += w.tile_rows) {
    const int32_t rows = std::min(w.tile_rows, oy_end - oy0);
    for (int32_t ox0 = 0; ox0 < out_w; ox0 += chunk) {
      const int32_t cols = std::min(chunk, out_w - ox0);
      const int tail = cols % 8;
      const TileFn tile = pick_tile(rows, (cols + 7) / 8);
      tile(w, bias, in + (static_cast<int64_t>(oy0) * w.plane_w + ox0) * static_cast<int64_t>(sizeof(float)),
           output + static_cast<int64_t>(oy0) * out_w + ox0, out_stride, n_begin, n_end, tail != 0,
           avx2::tail_mask(tail != 0 ? tail : 8), epilogue);
    }
  }
}

}  // namespace kernels
}  // namespace spruce
#endif
