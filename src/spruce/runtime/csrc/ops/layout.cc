// Data-movement operators: layout changes, RESHAPE (a copy), PAD, and MEAN
// over height and width.
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

// Between row-major NHWC and channel-major NCHW, same logical shape.
class TransposeOp : public Op {
 public:
  TransposeOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    if (x.shape != y.shape || x.shape.size() != 4 || x.layout == y.layout) {
      fail(s, "needs a 4-D input and output of one shape in different layouts; received " +
                  dims_str(x.shape) + " -> " + dims_str(y.shape));
    }
    to_chw_ = y.layout == kCHW;
    n_ = x.shape[0], h_ = x.shape[1], w_ = x.shape[2], c_ = x.shape[3];
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    const int64_t hw = h_ * w_, img = hw * c_;
    for (int64_t n = 0; n < n_; ++n) {
      const float* xi = x + n * img;
      float* yi = y + n * img;
      if (to_chw_) {
        for (int64_t p = 0; p < hw; ++p)
          for (int64_t c = 0; c < c_; ++c) yi[c * hw + p] = xi[p * c_ + c];
      } else {
        for (int64_t p = 0; p < hw; ++p)
          for (int64_t c = 0; c < c_; ++c) yi[p * c_ + c] = xi[c * hw + p];
      }
    }
  }

 private:
  bool to_chw_ = false;
  int64_t n_, h_, w_, c_;
};

// RESHAPE: row-major to row-major, same number of elements.
class CopyOp : public Op {
 public:
  CopyOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    bool same_memory = x.layout == kNative && y.layout == kNative;
    // A channel-major tensor with H = W = 1 has the row-major memory order.
    auto flat_ok = [](const Tensor& v) { return v.layout == kNative || (v.shape[1] == 1 && v.shape[2] == 1); };
    if (!same_memory && !(flat_ok(x) && flat_ok(y))) fail(s, "input and output must be row-major");
    if (x.numel != y.numel) {
      fail(s, "cannot reshape " + dims_str(x.shape) + " into " + dims_str(y.shape));
    }
    n_ = x.numel;
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    std::memcpy((*ctx.tensors)[outputs[0]].data, (*ctx.tensors)[inputs[0]].data, n_ * sizeof(float));
  }

 private:
  size_t n_;
};

// Zero padding, in memory order; `pads` holds (before, after) per logical dim.
class PadOp : public Op {
 public:
  PadOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    if (x.layout != y.layout || x.shape.size() != y.shape.size()) fail(s, "input and output layouts differ");
    const Array& pads = get_array(s, "pads");
    const size_t r = x.shape.size();
    expect_array(s, pads, {static_cast<int64_t>(r), 2}, "pads");
    std::vector<int64_t> before(r), after(r);
    for (float v : pads.data) {
      if (!(v >= 0.0f && v <= 65536.0f) || v != static_cast<float>(static_cast<int64_t>(v))) {
        fail(s, "paddings must be whole numbers in [0, 65536]. Received: " + std::to_string(v));
      }
    }
    for (size_t i = 0; i < r; ++i) {
      before[i] = static_cast<int64_t>(pads.data[2 * i]);
      after[i] = static_cast<int64_t>(pads.data[2 * i + 1]);
      if (x.shape[i] + before[i] + after[i] != y.shape[i]) {
        fail(s, "padding " + dims_str(x.shape) + " gives " + std::to_string(x.shape[i] + before[i] + after[i]) +
                    " in dimension " + std::to_string(i) + ", not " + std::to_string(y.shape[i]));
      }
    }
    if (x.layout == kCHW) {  // logical NHWC -> memory NCHW
      before = {before[0], before[3], before[1], before[2]};
    }
    in_ = x.mem_shape();
    out_ = y.mem_shape();
    before_ = before;
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    size_t total = 1;
    for (int64_t d : out_) total *= static_cast<size_t>(d);
    std::memset(y, 0, total * sizeof(float));
    const size_t r = in_.size();
    std::vector<int64_t> ostride(r, 1);
    for (size_t i = r - 1; i-- > 0;) ostride[i] = ostride[i + 1] * out_[i + 1];
    // Copy rows of the innermost dimension.
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < r; ++i) rows *= in_[i];
    const int64_t inner = in_[r - 1];
    for (int64_t row = 0; row < rows; ++row) {
      int64_t rem = row, off = before_[r - 1];
      for (size_t d = r - 1; d-- > 0;) {
        int64_t idx = rem % in_[d];
        rem /= in_[d];
        off += (idx + before_[d]) * ostride[d];
      }
      std::memcpy(y + off, x + row * inner, static_cast<size_t>(inner) * sizeof(float));
    }
  }

 private:
  std::vector<int64_t> in_, out_, before_;
};

// MEAN over H and W of a channel-major tensor: output [N, 1, 1, C] or [N, C].
class MeanHWOp : public Op {
 public:
  MeanHWOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    n_ = x.shape[0], c_ = x.shape[3], hw_ = stride_ = x.shape[1] * x.shape[2];
    bool keep = y.shape == std::vector<int64_t>{n_, 1, 1, c_};
    bool drop = y.shape == std::vector<int64_t>{n_, c_};
    if (!keep && !drop) fail(s, "output shape " + dims_str(y.shape) + " is not the mean of " + dims_str(x.shape) + " over H and W");
    if (n_ * c_ > INT32_MAX) fail(s, "too many channels in the batch: " + dims_str(x.shape));
  }
  const char* family() const override { return "pooling"; }
  bool accepts_input_plane_stride(int64_t stride) const override { return stride >= hw_; }
  void set_input_plane_stride(int64_t stride) override { stride_ = stride; }
  void run(const RunContext& ctx) const override {
    // Every image's channel planes are consecutive, so batch x channels are rows.
    kernels::global_avg_pool_chw((*ctx.tensors)[inputs[0]].data, hw_, stride_, (*ctx.tensors)[outputs[0]].data, 0,
                                 static_cast<int32_t>(n_ * c_));
  }

 private:
  int64_t n_, c_, hw_, stride_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_transpose(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<TransposeOp>(s, t); }
std::unique_ptr<Op> make_copy(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<CopyOp>(s, t); }
std::unique_ptr<Op> make_pad(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<PadOp>(s, t); }
std::unique_ptr<Op> make_mean_hw(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<MeanHWOp>(s, t); }

}  // namespace spruce
