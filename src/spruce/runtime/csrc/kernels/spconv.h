// Sparse KxK convolution in CHW (any kernel size, stride and padding; no
// dilation, groups 1): the kernel family of spconv*.cc. Part of the kernels'
// public API (kernels.h), kept in its own header.
//
// out[o][oy][ox] = act(bias[o] + sum_{i,ky,kx} W[o][ky][kx][i] *
//                      in[i][oy*sh + ky - pad_top][ox*sw + kx - pad_left])
// with zeros outside the input.
//
// The input is first copied (spconv_pack_input) into zero-padded "phase
// planes": for stride s, plane (py, px) of channel i holds the padded input's
// rows py, py + s, ... and columns px, px + s, ..., so tap (ky, kx) of output
// pixel (oy, ox) is element (oy + ky / s, ox + kx / s) of plane (ky % s, kx % s).
// Every stride then reads contiguous runs of a plane for contiguous output
// columns, and each nonzero weight is one (value, byte offset) pair, like the
// sparse 1x1 kernel's. Per output channel the nonzeros are stored in blocks of
// input channels whose tile of planes fits in L1 while every output channel
// reuses it; partial sums of a block wait in the output.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/kernels.h"

namespace spruce {
namespace kernels {

struct SpConvShape {
  int32_t in_c = 0, in_h = 0, in_w = 0, out_c = 0;
  int32_t kernel_h = 3, kernel_w = 3, stride_h = 1, stride_w = 1;
  int32_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int32_t out_h() const { return (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1; }
  int32_t out_w() const { return (in_w + pad_left + pad_right - kernel_w) / stride_w + 1; }
};

struct SparseConv {
  SpConvShape shape;
  int32_t phases_h = 1, phases_w = 1;  // min(stride, kernel) per axis
  int32_t plane_h = 0, plane_w = 0;    // rows and columns of one phase plane
  int64_t plane = 0;                   // floats between phase planes (plane_h * plane_w)
  // Output tile of the kernels: tile_rows output rows x tile_vectors vectors of
  // 8 columns (a row wider than 8 * tile_vectors runs in several column chunks).
  int32_t tile_rows = 1, tile_vectors = 1;
  int32_t k_block = 0;  // input channels per block
  int32_t blocks = 0;   // ceil(in_c / k_block), at least 1
  // [blocks][out_c + 1]: nonzeros of output channel o in block b are
  // [row_ptr[b * (out_c + 1) + o], row_ptr[b * (out_c + 1) + o + 1]), in
  // increasing (i, ky, kx) order.
  std::vector<int32_t> row_ptr;
  std::vector<float> values;
  // Bytes from output pixel (oy, ox)'s place in the packed input, oy * plane_w + ox,
  // to the value its nonzero multiplies.
  std::vector<int32_t> byte_offset;
  int64_t nnz() const { return static_cast<int64_t>(values.size()); }
  // Floats of the packed input (spconv_pack_input), slack for whole-vector reads included.
  int64_t packed_floats() const;
};

// Packs TFLite-ordered weights [out_c][kernel_h][kernel_w][in_c]; exact zeros
// are dropped. Throws std::invalid_argument on a shape that gives no output or
// a packed input too large for 32-bit byte offsets.
SparseConv pack_spconv(const float* ohwi, const SpConvShape& shape);

// Writes the phase planes of input channels [c_begin, c_end) (padding
// included) into `packed` (w.packed_floats() floats, the slack is zeroed with
// the last channel). input: [in_c][in_stride] with each channel's in_h x in_w
// pixels at the start of its plane.
void spconv_pack_input(const SparseConv& w, const float* input, int64_t in_stride, float* packed,
                       int32_t c_begin, int32_t c_end);

// Output channels [n_begin, n_end) x output rows [oy_begin, oy_end), from the
// whole packed input. output: [out_c][out_stride], each channel's out_h x
// out_w pixels row-major at the start of its plane; bias may be null (zero).
// Only those outputs are written. Any split of the two ranges gives the same
// bits: every output sums its nonzeros in order into one accumulator.
void spconv(const SparseConv& w, const float* bias, const float* packed, float* output,
            int64_t out_stride, int32_t n_begin, int32_t n_end, int32_t oy_begin, int32_t oy_end,
            const Activation& act, Isa isa = default_isa());

// Per-ISA kernels (the dispatch in spconv.cc picks one).
void spconv_portable(const SparseConv& w, const float* bias, const float* packed, float* output,
                     int64_t out_stride, int32_t n_begin, int32_t n_end, int32_t oy_begin, int32_t oy_end,
                     const Activation& act);
void spconv_avx2(const SparseConv& w, const float* bias, const float* packed, float* output,
                 int64_t out_stride, int32_t n_begin, int32_t n_end, int32_t oy_begin, int32_t oy_end,
                 const Activation& act);

}  // namespace kernels
}  // namespace spruce
