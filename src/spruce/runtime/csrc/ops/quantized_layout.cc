// int8 data movement: layout changes, RESHAPE (a copy), PAD (with the zero
// point) and MEAN over height and width.
#include <cmath>
#include <cstring>

#include "ops/ops.h"
#include "ops/quantized_common.h"

namespace spruce {

namespace {

// Between row-major NHWC and channel-major NCHW, same logical shape.
class QTransposeOp : public Op {
 public:
  QTransposeOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    if (x.shape != y.shape || x.shape.size() != 4 || x.layout == y.layout) {
      fail(s, "needs a 4-D input and output of one shape in different layouts; received " + dims_str(x.shape) +
                  " -> " + dims_str(y.shape));
    }
    to_chw_ = y.layout == kCHW;
    n_ = x.shape[0], hw_ = x.shape[1] * x.shape[2], c_ = x.shape[3];
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    const int8_t* x = (*ctx.tensors)[inputs[0]].s8();
    int8_t* y = (*ctx.tensors)[outputs[0]].s8();
    for (int64_t n = 0; n < n_; ++n) {
      const int8_t* xi = x + n * hw_ * c_;
      int8_t* yi = y + n * hw_ * c_;
      for (int64_t p = 0; p < hw_; ++p) {
        for (int64_t c = 0; c < c_; ++c) {
          if (to_chw_) {
            yi[c * hw_ + p] = xi[p * c_ + c];
          } else {
            yi[p * c_ + c] = xi[c * hw_ + p];
          }
        }
      }
    }
  }

 private:
  bool to_chw_;
  int64_t n_, hw_, c_;
};

class QCopyOp : public Op {
 public:
  QCopyOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    auto flat_ok = [](const Tensor& v) { return v.layout == kNative || (v.shape[1] == 1 && v.shape[2] == 1); };
    if (!flat_ok(x) || !flat_ok(y)) fail(s, "input and output must be row-major");
    if (x.numel != y.numel) fail(s, "cannot reshape " + dims_str(x.shape) + " into " + dims_str(y.shape));
    n_ = x.numel;
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    std::memcpy((*ctx.tensors)[outputs[0]].s8(), (*ctx.tensors)[inputs[0]].s8(), n_);
  }

 private:
  size_t n_;
};

// Spatial padding of a 4-D tensor with the zero point (which stands for 0).
class QPadOp : public Op {
 public:
  QPadOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    if (x.layout != y.layout || x.shape.size() != 4 || y.shape.size() != 4) {
      fail(s, "needs a 4-D input and output in one layout");
    }
    zp_ = zero_point(s, "zero_point");
    top_ = get_int(s, "pad_top"), left_ = get_int(s, "pad_left");
    const int64_t bottom = get_int(s, "pad_bottom"), right = get_int(s, "pad_right");
    for (int64_t v : {top_, left_, bottom, right}) expect_nonneg(s, v, "padding", 65536);
    expect_shape(s, y, {x.shape[0], x.shape[1] + top_ + bottom, x.shape[2] + left_ + right, x.shape[3]}, "output");
    chw_ = x.layout == kCHW;
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], c_ = x.shape[3];
    oh_ = y.shape[1], ow_ = y.shape[2];
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    const int8_t* x = (*ctx.tensors)[inputs[0]].s8();
    int8_t* y = (*ctx.tensors)[outputs[0]].s8();
    std::memset(y, zp_, static_cast<size_t>(n_ * oh_ * ow_ * c_));
    // Rows of the innermost dims: CHW copies plane rows, NHWC pixel rows.
    const int64_t planes = chw_ ? n_ * c_ : n_;
    const int64_t inner = chw_ ? 1 : c_;
    for (int64_t pl = 0; pl < planes; ++pl) {
      for (int64_t r = 0; r < h_; ++r) {
        const int8_t* src = x + (pl * h_ + r) * w_ * inner;
        int8_t* dst = y + ((pl * oh_ + r + top_) * ow_ + left_) * inner;
        std::memcpy(dst, src, static_cast<size_t>(w_ * inner));
      }
    }
  }

 private:
  bool chw_;
  int32_t zp_;
  int64_t top_, left_, n_, h_, w_, c_, oh_, ow_;
};

// MEAN over H and W: the int32 sum of each plane less the input zero point,
// requantized with scale (input_scale / output_scale) / pixels.
class QMeanHWOp : public Op {
 public:
  QMeanHWOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    expect_layout(s, x, kCHW, "input");
    n_ = x.shape[0], c_ = x.shape[3], hw_ = x.shape[1] * x.shape[2];
    const bool keep = y.shape == std::vector<int64_t>{n_, 1, 1, c_};
    const bool drop = y.shape == std::vector<int64_t>{n_, c_};
    if (!keep && !drop) fail(s, "output shape " + dims_str(y.shape) + " is not the mean of " + dims_str(x.shape) + " over H and W");
    if (hw_ > (1 << 23)) fail(s, "too many pixels to sum exactly: " + dims_str(x.shape));
    const float si = static_cast<float>(get_float(s, "input_scale", 0.0));
    const float so = static_cast<float>(get_float(s, "output_scale", 0.0));
    if (!(si > 0.0f && so > 0.0f) || !std::isfinite(si / so)) fail(s, "scales must be positive and finite");
    scale_ = si / so / static_cast<float>(hw_);
    zp_ = zero_point(s, "input_zero_point");
    out_ = qs8_output(s);
  }
  const char* family() const override { return "pooling_s8"; }
  void run(const RunContext& ctx) const override {
    const int8_t* x = (*ctx.tensors)[inputs[0]].s8();
    int8_t* y = (*ctx.tensors)[outputs[0]].s8();
    for (int64_t r = 0; r < n_ * c_; ++r) {
      const int8_t* plane = x + r * hw_;
      int32_t sum = 0;
      for (int64_t p = 0; p < hw_; ++p) sum += plane[p];
      y[r] = kernels::qs8_requantize(sum - static_cast<int32_t>(hw_) * zp_, scale_, out_.lo, out_.hi,
                                     out_.zero_point);
    }
  }

 private:
  int64_t n_, c_, hw_;
  float scale_;
  int32_t zp_;
  kernels::QS8Output out_;
};

}  // namespace

std::unique_ptr<Op> make_qtranspose(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QTransposeOp>(s, t);
}
std::unique_ptr<Op> make_qcopy(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<QCopyOp>(s, t); }
std::unique_ptr<Op> make_qpad(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<QPadOp>(s, t); }
std::unique_ptr<Op> make_qmean_hw(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QMeanHWOp>(s, t);
}

}  // namespace spruce
