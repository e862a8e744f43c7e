// Sparse KxK convolution in CHW: packing, portable kernel and dispatch (see
// spconv.h for the layout).
//
// The kernels walk the output in tiles of a few rows x a few 8-column vectors,
// and for each output channel accumulate weight x input-slice over the
// channel's nonzeros: one broadcast weight feeds one FMA per tile vector, all
// reading contiguous columns of one phase plane. The tile of input planes a
// block of input channels covers stays in cache while every output channel
// reuses it, as in the sparse 1x1 kernel (spmm.cc).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/kernels_impl.h"
#include "kernels/spconv.h"

namespace spruce {
namespace kernels {

namespace {

// Bytes of input planes a block's tile may take: half of a 48 KiB L1D, the
// rest left to the weight stream and the output tile.
constexpr int64_t kSpconvBlockBytes = 24 << 10;
// Floats the kernels may read past the last phase plane: the last vector of a
// row reaches at most 7 floats past the row's end.
constexpr int64_t kSpconvSlack = 16;

std::string shape_text(const SpConvShape& s) {
  return "in_c=" + std::to_string(s.in_c) + ", in_h=" + std::to_string(s.in_h) + ", in_w=" + std::to_string(s.in_w) +
         ", out_c=" + std::to_string(s.out_c) + ", kernel=" + std::to_string(s.kernel_h) + "x" +
         std::to_string(s.kernel_w) + ", stride=" + std::to_string(s.stride_h) + "x" + std::to_string(s.stride_w) +
         ", padding=(" + std::to_string(s.pad_top) + ", " + std::to_string(s.pad_left) + ", " +
         std::to_string(s.pad_bottom) + ", " + std::to_string(s.pad_right) + ")";
}

}  // namespace

int64_t SparseConv::packed_floats() const {
  return static_cast<int64_t>(shape.in_c) * phases_h * phases_w * plane + kSpconvSlack;
}

SparseConv pack_spconv(const float* ohwi, const SpConvShape& s) {
  const bool positive = s.in_c > 0 && s.in_h > 0 && s.in_w > 0 && s.out_c > 0 && s.kernel_h > 0 &&
                        s.kernel_w > 0 && s.stride_h > 0 && s.stride_w > 0;
  const bool pads = s.pad_top >= 0 && s.pad_left >= 0 && s.pad_bottom >= 0 && s.pad_right >= 0;
  if (!positive || !pads || s.in_h + s.pad_top + s.pad_bottom < s.kernel_h ||
      s.in_w + s.pad_left + s.pad_right < s.kernel_w) {
    throw std::invalid_argument(
        "pack_spconv: sizes must be positive, paddings >= 0, and the padded input at least as large as the "
        "kernel. Received: " + shape_text(s));
  }
  SparseConv w;
  w.shape = s;
  w.phases_h = std::min(s.stride_h, s.kernel_h);
  w.phases_w = std::min(s.stride_w, s.kernel_w);
  w.plane_h = s.out_h() + (s.kernel_h - 1) / s.stride_h;
  w.plane_w = s.out_w() + (s.kernel_w - 1) / s.stride_w;
  w.plane = static_cast<int64_t>(w.plane_h) * w.plane_w;
  if (w.packed_floats() * static_cast<int64_t>(sizeof(float)) > INT32_MAX) {
    throw std::invalid_argument("pack_spconv: the padded input must fit in 2 GiB (32-bit byte offsets). Received: " +
                                shape_text(s) + ". Use the dense kernel for this layer.");
  }
  // Rows of 8 or fewer vectors, and as many rows as keep 8 accumulators.
  const int32_t vectors = (s.out_w() + 7) / 8;
  w.tile_vectors = std::min(vectors, 8);
  w.tile_rows = std::max(1, 8 / w.tile_vectors);
  const int64_t channel_bytes = static_cast<int64_t>(w.phases_h) * w.phases_w *
                                (w.tile_rows + (s.kernel_h - 1) / s.stride_h) * w.plane_w *
                                static_cast<int64_t>(sizeof(float));
  const int32_t fit = static_cast<int32_t>(std::clamp<int64_t>(kSpconvBlockBytes / channel_bytes, 1, s.in_c));
  w.blocks = (s.in_c + fit - 1) / fit;
  w.k_block = (s.in_c + w.blocks - 1) / w.blocks;  // equal blocks
  w.row_ptr.assign(static_cast<size_t>(w.blocks) * (s.out_c + 1), 0);
  const int32_t phases = w.phases_h * w.phases_w;
  for (int32_t b = 0; b < w.blocks; ++b) {
    const int32_t i_begin = b * w.k_block, i_end = std::min(s.in_c, i_begin + w.k_block);
    int32_t* row_ptr = w.row_ptr.data() + static_cast<int64_t>(b) * (s.out_c + 1);
    row_ptr[0] = static_cast<int32_t>(w.values.size());
    for (int32_t o = 0; o < s.out_c; ++o) {
      for (int32_t i = i_begin; i < i_end; ++i) {
        for (int32_t ky = 0; ky < s.kernel_h; ++ky) {
          for (int32_t kx = 0; kx < s.kernel_w; ++kx) {
            const float v = ohwi[((static_cast<int64_t>(o) * s.kernel_h + ky) * s.kernel_w + kx) * s.in_c + i];
            if (v == 0.0f) continue;
            const int32_t phase = (ky % s.stride_h) * w.phases_w + kx % s.stride_w;
            const int64_t floats = (static_cast<int64_t>(i) * phases + phase) * w.plane +
                                   static_cast<int64_t>(ky / s.stride_h) * w.plane_w + kx / s.stride_w;
            w.values.push_back(v);
            w.byte_offset.push_back(static_cast<int32_t>(floats * static_cast<int64_t>(sizeof(float))));
          }
        }
      }
      if (w.values.size() > static_cast<size_t>(INT32_MAX)) {
        throw std::invalid_argument("pack_spconv: more than 2^31 - 1 nonzeros. Received: " + shape_text(s));
      }
      row_ptr[o + 1] = static_cast<int32_t>(w.values.size());
    }
  }
  return w;
}

void spconv_pack_input(const SparseConv& w, const float* input, int64_t in_stride, float* packed,
                       int32_t c_begin, int32_t c_end) {
  const SpConvShape& s = w.shape;
  const int32_t phases = w.phases_h * w.phases_w;
  for (int32_t i = c_begin; i < c_end; ++i) {
    const float* src = input + static_cast<int64_t>(i) * in_stride;
    for (int32_t py = 0; py < w.phases_h; ++py) {
      for (int32_t px = 0; px < w.phases_w; ++px) {
        float* dst = packed + (static_cast<int64_t>(i) * phases + py * w.phases_w + px) * w.plane;
        // Plane columns x whose input column x * stride_w + px - pad_left is inside the row.
        const int32_t first = px - s.pad_left;  // input column of plane column 0
        const int32_t x_lo = std::min(w.plane_w, first >= 0 ? 0 : (-first + s.stride_w - 1) / s.stride_w);
        const int32_t x_hi = std::max(
            x_lo, std::min(w.plane_w, s.in_w - first <= 0 ? 0 : (s.in_w - first + s.stride_w - 1) / s.stride_w));
        for (int32_t y = 0; y < w.plane_h; ++y, dst += w.plane_w) {
          const int32_t iy = y * s.stride_h + py - s.pad_top;
          if (iy < 0 || iy >= s.in_h || x_lo >= x_hi) {
            std::fill(dst, dst + w.plane_w, 0.0f);
            continue;
          }
          const float* row = src + static_cast<int64_t>(iy) * s.in_w;
          std::fill(dst, dst + x_lo, 0.0f);
          if (s.stride_w == 1) {
            std::memcpy(dst + x_lo, row + x_lo + first, static_cast<size_t>(x_hi - x_lo) * sizeof(float));
          } else {
            for (int32_t x = x_lo; x < x_hi; ++x) dst[x] = row[x * s.stride_w + first];
          }
          std::fill(dst + x_hi, dst + w.plane_w, 0.0f);
        }
      }
    }
  }
  if (c_end == s.in_c && c_begin < c_end) {
    std::fill_n(packed + w.packed_floats() - kSpconvSlack, kSpconvSlack, 0.0f);
  }
}

void spconv_portable(const SparseConv& w, const float* bias, const float* packed, float* output,
                     int64_t out_stride, int32_t n_begin, int32_t n_end, int32_t oy_begin, int32_t oy_end,
                     const Activation& act) {
  const int32_t out_w = w.shape.out_w();
  const int32_t chunk = 8 * w.tile_vectors;
  const char* in = reinterpret_cast<const char*>(packed);
  for (int32_t oy0 = oy_begin; oy0 < oy_end; oy0 += w.tile_rows) {
    const int32_t rows = std::min(w.tile_rows, oy_end - oy0);
    for (int32_t ox0 = 0; ox0 < out_w; ox0 += chunk) {
      const int32_t cols = std::min(chunk, out_w - ox0);
      for (int32_t b = 0; b < w.blocks; ++b) {
        const int32_t* row_ptr = w.row_ptr.data() + static_cast<int64_t>(b) * (w.shape.out_c + 1);
        const bool first = b == 0, last = b + 1 == w.blocks;
        for (int32_t n = n_begin; n < n_end; ++n) {
          for (int32_t r = 0; r < rows; ++r) {
            const int64_t pos = static_cast<int64_t>(oy0 + r) * w.plane_w + ox0;  // in the packed planes
            float* o = output + n * out_stride + static_cast<int64_t>(oy0 + r) * out_w + ox0;
            for (int32_t c = 0; c < cols; ++c) {
              float acc = first ? (bias != nullptr ? bias[n] : 0.0f) : o[c];
              for (int32_t j = row_ptr[n]; j < row_ptr[n + 1]; ++j) {
                const float x = *reinterpret_cast<const float*>(in + w.byte_offset[j] + (pos + c) * 4);
                acc += w.values[j] * x;
              }
              o[c] = last ? apply_activation(acc, act) : acc;
            }
          }
        }
      }
    }
  }
}

void spconv(const SparseConv& w, const float* bias, const float* packed, float* output, int64_t out_stride,
            int32_t n_begin, int32_t n_end, int32_t oy_begin, int32_t oy_end, const Activation& act, Isa isa) {
  if (n_begin >= n_end || oy_begin >= oy_end) return;
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) >= Isa::kAvx2) {
    spconv_avx2(w, bias, packed, output, out_stride, n_begin, n_end, oy_begin, oy_end, act);
    return;
  }
#endif
  spconv_portable(w, bias, packed, output, out_stride, n_begin, n_end, oy_begin, oy_end, act);
}

}  // namespace kernels
}  // namespace spruce
