// int8 1x1 convolution over 4-channel blocks: packing, the tile interleave,
// the portable kernel and the dispatch (the AVX-512 VNNI kernel is in
// qs8_spmm_avx512.cc).
#include <cstring>
#include <stdexcept>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

#if SPRUCE_X86_KERNELS
void qs8_interleave_tile_avx512(const int8_t* in, int64_t stride, int32_t cols, int64_t p, int64_t count,
                                uint8_t* tile);
void qs8_spmm_tile_avx512(const QS8BlockMatrix& w, const uint8_t* tile, int64_t count, int32_t r_begin,
                          int32_t r_end, int8_t* out, int64_t out_stride);
#endif

bool cpu_has_avx512_vnni() {
#if SPRUCE_X86_KERNELS
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return has;
#else
  return false;
#endif
}

namespace {

bool use_vnni(Isa isa) { return resolve_isa(isa) == Isa::kAvx512 && cpu_has_avx512_vnni(); }

}  // namespace

QS8BlockMatrix pack_qs8_blocks(const int8_t* weights, int32_t rows, int32_t cols, const int32_t* bias,
                               const float* scale, int32_t input_zero_point, const QS8Output& out) {
  if (rows < 1 || cols < 1) throw std::invalid_argument("pack_qs8_blocks: empty matrix");
  if (static_cast<int64_t>(cols + 3) / 4 * kQS8Tile * 4 > INT32_MAX) {
    throw std::invalid_argument("pack_qs8_blocks: too many input channels for 32-bit tile offsets");
  }
  QS8BlockMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.blocks = (cols + 3) / 4;
  m.out = out;
  m.row_ptr.assign(1, 0);
  m.bias.resize(rows);
  m.scale.assign(scale, scale + rows);
  for (int32_t o = 0; o < rows; ++o) {
    const int8_t* row = weights + static_cast<int64_t>(o) * cols;
    int64_t sum = 0;
    for (int32_t b = 0; b < m.blocks; ++b) {
      uint32_t word = 0;
      for (int32_t j = 0; j < 4 && 4 * b + j < cols; ++j) {
        const int8_t v = row[4 * b + j];
        sum += v;
        word |= static_cast<uint32_t>(static_cast<uint8_t>(v)) << (8 * j);
      }
      if (word == 0) continue;
      m.offsets.push_back(static_cast<int32_t>(b * kQS8Tile * 4));
      m.weights.push_back(static_cast<int32_t>(word));
    }
    m.row_ptr.push_back(static_cast<int32_t>(m.offsets.size()));
    // |sum| <= 127 * cols and |zp + 128| <= 255, so the correction fits easily;
    // the exact int32 sum a TFLite kernel would form then stays exact here.
    const int64_t b = (bias ? bias[o] : 0) - (static_cast<int64_t>(input_zero_point) + 128) * sum;
    if (b < INT32_MIN || b > INT32_MAX) throw std::invalid_argument("pack_qs8_blocks: bias out of int32 range");
    m.bias[o] = static_cast<int32_t>(b);
  }
  return m;
}

void qs8_interleave_tile(const int8_t* in, int64_t stride, int32_t cols, int64_t p, int64_t count,
                         uint8_t* tile, Isa isa) {
#if SPRUCE_X86_KERNELS
  if (use_vnni(isa)) return qs8_interleave_tile_avx512(in, stride, cols, p, count, tile);
#endif
  const int32_t blocks = (cols + 3) / 4;
  for (int32_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + static_cast<int64_t>(b) * kQS8Tile * 4;
    for (int32_t j = 0; j < 4; ++j) {
      const int32_t c = 4 * b + j;
      if (c >= cols) {
        for (int64_t q = 0; q < count; ++q) t[q * 4 + j] = 0;
        continue;
      }
      const int8_t* row = in + c * stride + p;
      for (int64_t q = 0; q < count; ++q) t[q * 4 + j] = static_cast<uint8_t>(row[q] + 128);
    }
  }
}

namespace {

void spmm_tile_portable(const QS8BlockMatrix& w, const uint8_t* tile, int64_t count, int32_t r_begin,
                        int32_t r_end, int8_t* out, int64_t out_stride) {
  int32_t acc[kQS8Tile];
  for (int32_t o = r_begin; o < r_end; ++o) {
    for (int64_t q = 0; q < count; ++q) acc[q] = w.bias[o];
    for (int32_t k = w.row_ptr[o]; k < w.row_ptr[o + 1]; ++k) {
      const uint8_t* t = tile + w.offsets[k];
      const uint32_t word = static_cast<uint32_t>(w.weights[k]);
      const int32_t w0 = static_cast<int8_t>(word), w1 = static_cast<int8_t>(word >> 8);
      const int32_t w2 = static_cast<int8_t>(word >> 16), w3 = static_cast<int8_t>(word >> 24);
      for (int64_t q = 0; q < count; ++q) {
        acc[q] += w0 * t[4 * q] + w1 * t[4 * q + 1] + w2 * t[4 * q + 2] + w3 * t[4 * q + 3];
      }
    }
    int8_t* y = out + o * out_stride;
    const float s = w.scale[o];
    for (int64_t q = 0; q < count; ++q) y[q] = qs8_requantize(acc[q], s, w.out.lo, w.out.hi, w.out.zero_point);
  }
}

}  // namespace

void qs8_spmm_tile(const QS8BlockMatrix& w, const uint8_t* tile, int64_t count, int32_t r_begin,
                   int32_t r_end, int8_t* out, int64_t out_stride, Isa isa) {
#if SPRUCE_X86_KERNELS
  if (use_vnni(isa)) return qs8_spmm_tile_avx512(w, tile, count, r_begin, r_end, out, out_stride);
#endif
  spmm_tile_portable(w, tile, count, r_begin, r_end, out, out_stride);
}

}  // namespace kernels
}  // namespace spruce
