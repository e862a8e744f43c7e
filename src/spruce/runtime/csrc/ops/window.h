// The 2-D window of a pooling or a convolution (kernel, stride, padding)
// read from an OpSpec and checked against its input and output shapes: the
// setup that conv_im2col.cc and pool.cc share.
#pragma once

#include <string>

#include "ops/common.h"

namespace spruce {

struct Window2D {
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, top = 0, left = 0, bottom = 0, right = 0;
};

// Reads kernel_h/_w, stride_h/_w and pad_* (each padding at most max_pad).
inline Window2D read_window2d(const OpSpec& s, int64_t max_pad) {
  Window2D w;
  w.kh = get_int(s, "kernel_h"), w.kw = get_int(s, "kernel_w");
  w.sh = get_int(s, "stride_h"), w.sw = get_int(s, "stride_w");
  w.top = get_int(s, "pad_top"), w.left = get_int(s, "pad_left");
  w.bottom = get_int(s, "pad_bottom"), w.right = get_int(s, "pad_right");
  expect_positive(s, w.kh, "kernel height", 1024);
  expect_positive(s, w.kw, "kernel width", 1024);
  expect_positive(s, w.sh, "stride", 1024);
  expect_positive(s, w.sw, "stride", 1024);
  for (int64_t p : {w.top, w.left, w.bottom, w.right}) expect_nonneg(s, p, "padding", max_pad);
  return w;
}

// Fails unless the window over x's [N, H, W, .] gives y's height and width
// and the batch is kept.
inline void expect_window_output(const OpSpec& s, const Window2D& w, const Tensor& x, const Tensor& y) {
  const int64_t oh = conv_out_size(x.shape[1], w.kh, w.sh, 1, w.top, w.bottom);
  const int64_t ow = conv_out_size(x.shape[2], w.kw, w.sw, 1, w.left, w.right);
  if (oh != y.shape[1] || ow != y.shape[2] || x.shape[0] != y.shape[0]) {
    fail(s, "input " + dims_str(x.shape) + " does not give output " + dims_str(y.shape) + " with a " +
                std::to_string(w.kh) + "x" + std::to_string(w.kw) + " window, stride " + std::to_string(w.sh) + "x" +
                std::to_string(w.sw) + " and this padding: it gives " + std::to_string(oh) + "x" +
                std::to_string(ow) + "; the plan says " + dims_str(y.shape));
  }
}

}  // namespace spruce
