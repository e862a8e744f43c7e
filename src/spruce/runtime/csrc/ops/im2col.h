// The window matrix of a convolution on channel-major activations (im2col),
// shared by the dense ops that multiply it: conv_im2col.cc (one matrix product)
// and conv_grouped.cc (one per group, over its block of rows).
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/common.h"
#include "ops/window.h"

namespace spruce {

struct Im2col {
  int64_t ih, iw, ow, pixels;  // input plane, output width, output pixels
  Window2D win;

  // Columns [p0, p1) of the rows of input channels [c0, c1): row (i, ky, kx)
  // (at (i * kh + ky) * kw + kx, each `pixels` long) holds, for each output pixel,
  // the input value under tap (ky, kx) of channel i, or 0 in the padding.
  void copy(const float* image, float* rows, int64_t c0, int64_t c1, int64_t p0, int64_t p1) const {
    const int64_t kh = win.kh, kw = win.kw, sh = win.sh, sw = win.sw;
    for (int64_t i = c0; i < c1; ++i) {
      const float* plane = image + i * ih * iw;
      for (int64_t ky = 0; ky < kh; ++ky) {
        for (int64_t kx = 0; kx < kw; ++kx) {
          float* dst = rows + ((i * kh + ky) * kw + kx) * pixels;
          const int64_t x_off = kx - win.left;
          // Output columns whose tap lands inside the row: 0 <= ox * sw + x_off < iw.
          const int64_t ox_lo = std::min(ow, x_off >= 0 ? 0 : (-x_off + sw - 1) / sw);
          const int64_t ox_hi = std::max(ox_lo, std::min(ow, iw - x_off <= 0 ? 0 : (iw - x_off + sw - 1) / sw));
          for (int64_t p = p0; p < p1;) {
            const int64_t oy = p / ow, ox0 = p % ow;
            const int64_t ox1 = std::min(ow, ox0 + (p1 - p));
            const int64_t iy = oy * sh + ky - win.top;
            float* d = dst + p - ox0;  // d[ox] is output pixel (oy, ox)
            const int64_t a = std::max(ox0, ox_lo), b = std::min(ox1, ox_hi);
            if (iy < 0 || iy >= ih || a >= b) {
              std::fill(d + ox0, d + ox1, 0.0f);
            } else {
              const float* row = plane + iy * iw + x_off;
              std::fill(d + ox0, d + a, 0.0f);
              if (sw == 1) {
                std::memcpy(d + a, row + a, static_cast<size_t>(b - a) * sizeof(float));
              } else {
                for (int64_t ox = a; ox < b; ++ox) d[ox] = row[ox * sw];
              }
              std::fill(d + b, d + ox1, 0.0f);
            }
            p += ox1 - ox0;
          }
        }
      }
    }
  }
};

// The weights [O][kh][kw][I] of output channels [o0, o1) as rows in the
// window matrix's order: row o - o0 holds [I][kh][kw].
inline std::vector<float> window_weight_rows(const float* w, int64_t o0, int64_t o1, int64_t kh, int64_t kw,
                                             int64_t in_c) {
  const int64_t k = in_c * kh * kw;
  std::vector<float> rows(static_cast<size_t>((o1 - o0) * k));
  for (int64_t o = o0; o < o1; ++o)
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx)
        for (int64_t i = 0; i < in_c; ++i) {
          rows[static_cast<size_t>((o - o0) * k + (i * kh + ky) * kw + kx)] =
              w[static_cast<size_t>(((o * kh + ky) * kw + kx) * in_c + i)];
        }
  return rows;
}

}  // namespace spruce
