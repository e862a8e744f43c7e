// Sparse 1x1 convolution in CHW: packing, portable kernel and dispatch.
//
// Design (Fast Sparse ConvNets, Elsen et al. 2020): the weight matrix is
// compressed per output channel; the kernel walks a tile of pixels at a time
// and, for each output channel, accumulates weight * input-row-slice over that
// channel's nonzeros. The tile of input rows is reused by every output channel,
// so it stays in cache. Pixel order inside a tile never changes the arithmetic
// of one output element, so any split of the ranges gives identical results.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

namespace {

// Fills m's row groups (kernels.h) when every group of kSpmmGroupRows rows
// shares its pattern well enough; leaves group_rows 0 otherwise.
void pack_groups(const float* dense, SparseMatrix& m) {
  constexpr int32_t R = kSpmmGroupRows;
  if (m.rows < R || m.rows % R != 0 || m.cols < kSpmmGroupMinCols || m.nnz() == 0) return;
  const int32_t groups = m.rows / R;
  auto has_entry = [&](int32_t g, int32_t k) {
    for (int32_t r = 0; r < R; ++r) {
      if (dense[static_cast<int64_t>(g * R + r) * m.cols + k] != 0.0f) return true;
    }
    return false;
  };
  // Entries: input channels where any row of the group has a nonzero.
  int64_t entries = 0;
  for (int32_t g = 0; g < groups; ++g) {
    for (int32_t k = 0; k < m.cols; ++k) entries += has_entry(g, k);
  }
  if (static_cast<double>(m.nnz()) < kSpmmGroupMinFill * static_cast<double>(entries) * R) return;
  m.group_rows = R;
  m.group_ptr.assign(static_cast<size_t>(m.blocks) * (groups + 1), 0);
  m.group_offset.reserve(static_cast<size_t>(entries));
  m.group_values.reserve(static_cast<size_t>(entries) * R);
  const int64_t row_bytes = m.in_stride * static_cast<int64_t>(sizeof(float));
  for (int32_t b = 0; b < m.blocks; ++b) {
    const int32_t k_begin = b * m.k_block, k_end = std::min(m.cols, k_begin + m.k_block);
    int32_t* group_ptr = m.group_ptr.data() + static_cast<int64_t>(b) * (groups + 1);
    group_ptr[0] = static_cast<int32_t>(m.group_offset.size());
    for (int32_t g = 0; g < groups; ++g) {
      for (int32_t k = k_begin; k < k_end; ++k) {
        if (!has_entry(g, k)) continue;
        m.group_offset.push_back(static_cast<int32_t>(k * row_bytes));
        for (int32_t r = 0; r < R; ++r) m.group_values.push_back(dense[static_cast<int64_t>(g * R + r) * m.cols + k]);
      }
      group_ptr[g + 1] = static_cast<int32_t>(m.group_offset.size());
    }
  }
}

}  // namespace

SparseMatrix pack_sparse(const float* dense, int32_t rows, int32_t cols, int64_t in_stride) {
  if (rows < 0 || cols < 0 || in_stride < 0) {
    throw std::invalid_argument("pack_sparse: rows, cols and in_stride must be >= 0. Received: rows=" +
                                std::to_string(rows) + ", cols=" + std::to_string(cols) +
                                ", in_stride=" + std::to_string(in_stride));
  }
  const int64_t max_offset = static_cast<int64_t>(cols) * in_stride * static_cast<int64_t>(sizeof(float));
  if (max_offset > INT32_MAX) {
    throw std::invalid_argument(
        "pack_sparse: cols * in_stride * 4 must fit in int32 (byte offsets). Received: cols=" +
        std::to_string(cols) + ", in_stride=" + std::to_string(in_stride) +
        ". Use the dense kernel for this layer.");
  }
  SparseMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.in_stride = in_stride;
  m.k_block = cols <= kSpmmKBlock * 3 / 2 ? std::max<int32_t>(cols, 1) : kSpmmKBlock;
  m.blocks = std::max<int32_t>(1, (cols + m.k_block - 1) / m.k_block);
  m.row_ptr.assign(static_cast<size_t>(m.blocks) * (rows + 1), 0);
  for (int32_t b = 0; b < m.blocks; ++b) {
    const int32_t k_begin = b * m.k_block, k_end = std::min(cols, k_begin + m.k_block);
    int32_t* row_ptr = m.row_ptr.data() + static_cast<int64_t>(b) * (rows + 1);
    row_ptr[0] = static_cast<int32_t>(m.values.size());
    for (int32_t n = 0; n < rows; ++n) {
      const float* row = dense + static_cast<int64_t>(n) * cols;
      for (int32_t k = k_begin; k < k_end; ++k) {
        if (row[k] != 0.0f) {
          m.values.push_back(row[k]);
          m.byte_offset.push_back(static_cast<int32_t>(k * in_stride * static_cast<int64_t>(sizeof(float))));
        }
      }
      row_ptr[n + 1] = static_cast<int32_t>(m.values.size());
    }
  }
  if (m.values.size() > static_cast<size_t>(INT32_MAX)) {
    throw std::invalid_argument("pack_sparse: more than 2^31 - 1 nonzeros. Received: rows=" +
                                std::to_string(rows) + ", cols=" + std::to_string(cols));
  }
  pack_groups(dense, m);
  return m;
}

void set_in_stride(SparseMatrix& m, int64_t in_stride) {
  if (in_stride <= 0 ||
      static_cast<int64_t>(m.cols) * in_stride * static_cast<int64_t>(sizeof(float)) > INT32_MAX) {
    throw std::invalid_argument("set_in_stride: cols * in_stride * 4 must fit in int32. Received: cols=" +
                                std::to_string(m.cols) + ", in_stride=" + std::to_string(in_stride));
  }
  const int64_t old_row = m.in_stride * static_cast<int64_t>(sizeof(float));
  if (old_row <= 0 && m.nnz() > 0) {
    throw std::invalid_argument("set_in_stride: the matrix was packed with in_stride=0");
  }
  for (std::vector<int32_t>* offsets : {&m.byte_offset, &m.group_offset}) {
    for (int32_t& off : *offsets) {
      off = static_cast<int32_t>(off / old_row * in_stride * static_cast<int64_t>(sizeof(float)));
    }
  }
  m.in_stride = in_stride;
}

int64_t spmm_input_tile(int32_t cols, int64_t pixels, Isa isa) {
  const bool wide = cols <= kSpmmWideTileMaxCols;
  if (resolve_isa(isa) == Isa::kAvx512) {
    // Rows 64-byte aligned, 16-float multiples apart: no vector load splits a
    // cache line. A small plane is one tile (in place when its producer pads
    // the planes); large ones in paired mode take tiles whose k-block of input
    // rows stays in L1.
    const int64_t padded = (pixels + 15) / 16 * 16;
    if (pixels <= 0 || (padded == pixels && (wide || pixels <= kSpmm512PairedTile))) return 0;
    if (padded <= kSpmm512WholeImage) return padded;
    if (wide) return kSpmm512WideTile;
    const int64_t vectors = padded / 16, per_tile = kSpmm512PairedTile / 16;
    const int64_t tiles = (vectors + per_tile - 1) / per_tile;
    return (vectors + tiles - 1) / tiles * 16;
  }
  if (pixels <= 0 || (wide && pixels % 16 == 0)) return 0;
  if (wide) return std::min(whole_vectors(pixels), kSpmmWideTile);
  if (pixels <= kSpmmPairedSinglePass) return whole_vectors(pixels);
  const int64_t tiles = (pixels + kSpmmPackedTile - 1) / kSpmmPackedTile;
  return whole_vectors((pixels + tiles - 1) / tiles);
}

namespace {

// Two partial sums per element (even and odd nonzeros), added at the end, so
// the arithmetic is the same as the AVX2 kernel's two accumulator sets.
template <int T, bool kFull>
inline void spmm_tile_portable(const SparseMatrix& w, const float* values, const float* bias, const char* in,
                               float* out, int64_t out_stride, int32_t n_begin, int32_t n_end,
                               int width, const Activation& act, const float* res, int64_t res_stride) {
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t* row_ptr = w.row_ptr.data() + static_cast<int64_t>(b) * (w.rows + 1);
    const bool first = b == 0, last = b + 1 == w.blocks;
    for (int32_t n = n_begin; n < n_end; ++n) {
      float acc0[T], acc1[T];
      float* o = out + n * out_stride;
      const float bn = bias != nullptr ? bias[n] : 0.0f;
      for (int i = 0; i < T; ++i) {
        acc0[i] = first ? bn : ((kFull || i < width) ? o[i] : 0.0f);
        acc1[i] = 0.0f;
      }
      int32_t j = row_ptr[n];
      const int32_t end = row_ptr[n + 1];
      for (; j + 1 < end; j += 2) {
        const float w0 = values[j], w1 = values[j + 1];
        const float* x0 = reinterpret_cast<const float*>(in + w.byte_offset[j]);
        const float* x1 = reinterpret_cast<const float*>(in + w.byte_offset[j + 1]);
        for (int i = 0; i < T; ++i) {
          if (kFull || i < width) {
            acc0[i] += w0 * x0[i];
            acc1[i] += w1 * x1[i];
          }
        }
      }
      if (j < end) {
        const float w0 = values[j];
        const float* x0 = reinterpret_cast<const float*>(in + w.byte_offset[j]);
        for (int i = 0; i < T; ++i) if (kFull || i < width) acc0[i] += w0 * x0[i];
      }
      const float* r = last && res != nullptr ? res + n * res_stride : nullptr;
      for (int i = 0; i < width; ++i) {
        float y = acc0[i] + acc1[i];
        if (r != nullptr) y += r[i];
        o[i] = last ? apply_activation(y, act) : y;
      }
    }
  }
}

}  // namespace

void spmm_portable(const SparseMatrix& w, const float* bias, const float* input, float* output,
                   int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
                   int64_t p_end, const Activation& act, bool /*input_padded*/, bool /*output_padded*/,
                   const float* values, const float* /*group_values: the portable kernel runs CSR only*/,
                   const float* residual, int64_t residual_stride) {
  // No masked loads or stores here: the padding flags change nothing.
  constexpr int kTile = 16;
  int64_t p = p_begin;
  for (; p + kTile <= p_end; p += kTile) {
    spmm_tile_portable<kTile, true>(w, values, bias, reinterpret_cast<const char*>(input + p), output + p,
                              out_stride, n_begin, n_end, kTile, act, residual != nullptr ? residual + p : nullptr,
                              residual_stride);
  }
  if (p < p_end) {
    spmm_tile_portable<kTile, false>(w, values, bias, reinterpret_cast<const char*>(input + p), output + p,
                              out_stride, n_begin, n_end, static_cast<int>(p_end - p), act,
                              residual != nullptr ? residual + p : nullptr, residual_stride);
  }
}

void spmm(const SparseMatrix& w, const float* bias, const float* input, float* output,
          int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end,
          const Activation& act, Isa isa, bool input_padded, bool output_padded, const float* values,
          const float* group_values, const float* residual, int64_t residual_stride) {
  if (n_begin >= n_end || p_begin >= p_end) return;
  if (values == nullptr) values = w.values.data();
  if (group_values == nullptr) group_values = w.group_values.data();
#if SPRUCE_X86_KERNELS
  const Isa resolved = resolve_isa(isa);
  if (resolved == Isa::kAvx512) {
    spmm_avx512(w, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, act, values, group_values,
                residual, residual_stride);
    return;
  }
  if (resolved >= Isa::kAvx2) {
    spmm_avx2(w, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, act, input_padded,
              output_padded, values, group_values, residual, residual_stride);
    return;
  }
#endif
  spmm_portable(w, bias, input, output, out_stride, n_begin, n_end, p_begin, p_end, act, input_padded,
                output_padded, values, group_values, residual, residual_stride);
}

std::vector<int32_t> spmm_value_columns(const SparseMatrix& w) {
  const int64_t row_bytes = std::max<int64_t>(1, w.in_stride * static_cast<int64_t>(sizeof(float)));
  std::vector<int32_t> cols;
  cols.reserve(w.values.size() + w.group_values.size());
  for (int32_t off : w.byte_offset) cols.push_back(static_cast<int32_t>(off / row_bytes));
  for (int32_t off : w.group_offset) cols.insert(cols.end(), static_cast<size_t>(w.group_rows), off / row_bytes);
  return cols;
}

void spmm_scale_values(const float* values, const int32_t* cols, const float* scale, float* out, int64_t n,
                       Isa isa) {
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) == Isa::kAvx512) {
    spmm_scale_values_avx512(values, cols, scale, out, n);
    return;
  }
#endif
  for (int64_t j = 0; j < n; ++j) out[j] = values[j] * scale[cols[j]];
}

void spmv(const float* values, const int32_t* cols, const int64_t* row_ptr, const float* x, float* y,
          int64_t n_begin, int64_t n_end, Isa isa) {
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) == Isa::kAvx512) {
    spmv_avx512(values, cols, row_ptr, x, y, n_begin, n_end);
    return;
  }
#endif
  // Four partial sums: independent chains, which the compiler keeps in
  // registers on any ISA.
  for (int64_t n = n_begin; n < n_end; ++n) {
    float part[4] = {0, 0, 0, 0};
    int64_t i = row_ptr[n];
    const int64_t end = row_ptr[n + 1];
    for (; i + 4 <= end; i += 4) {
      for (int j = 0; j < 4; ++j) part[j] += values[i + j] * x[cols[i + j]];
    }
    float sum = (part[0] + part[1]) + (part[2] + part[3]);
    for (; i < end; ++i) sum += values[i] * x[cols[i]];
    y[n] = sum;
  }
}

}  // namespace kernels
}  // namespace spruce
