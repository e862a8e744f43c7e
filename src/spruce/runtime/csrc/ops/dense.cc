// FULLY_CONNECTED and SOFTMAX on row-major tensors.
#include <cmath>

#include "graph/float_buffer.h"
#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

// y[m, o] = act(sum_k x[m, k] * w[o, k] + bias[o]).
class FullyConnectedOp : public Op {
 public:
  FullyConnectedOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    bool flat = [](const Tensor& v) { return v.layout == kNative || (v.shape[1] == 1 && v.shape[2] == 1); }(x);
    if (!flat) fail(s, "input must be row-major");
    if (y.layout != kNative) fail(s, "output must be row-major");
    const Array& w = get_array(s, "weights");
    if (w.shape.size() != 2) fail(s, "weights must be 2-D; received " + dims_str(w.shape));
    out_ = w.shape[0], k_ = w.shape[1];
    expect_array(s, w, {out_, k_}, "weights");
    if (k_ < 1 || x.numel % static_cast<size_t>(k_) != 0) {
      fail(s, "input " + dims_str(x.shape) + " does not split into rows of " + std::to_string(k_));
    }
    rows_ = static_cast<int64_t>(x.numel) / k_;
    if (y.numel != static_cast<size_t>(rows_ * out_) || y.shape.back() != out_) {
      fail(s, "output " + dims_str(y.shape) + " should hold " + std::to_string(rows_) + " rows of " + std::to_string(out_));
    }
    weights_ = FloatBuffer(w.data.size());  // a 1000-class head's megabytes go on huge pages
    std::copy(w.data.begin(), w.data.end(), weights_.data());
    bias_.assign(static_cast<size_t>(out_), 0.0f);
    if (const Array* b = find_array(s, "bias")) {
      expect_array(s, *b, {out_}, "bias");
      bias_ = b->data;
    }
    act_ = kernel_activation(checked_activation(s));
  }
  const char* family() const override { return "fully_connected"; }
  double flops() const override { return 2.0 * rows_ * out_ * k_; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    auto body = [&](size_t ob, size_t oe) {
      for (int64_t m = 0; m < rows_; ++m) {
        kernels::fully_connected(x + m * k_, weights_.data(), bias_.data(), y + m * out_, k_,
                                 static_cast<int64_t>(ob), static_cast<int64_t>(oe), act_);
      }
    };
    if (flops() > 1e6) ctx.pool->parallel_for(static_cast<size_t>(out_), 64, body);
    else body(0, static_cast<size_t>(out_));
  }

 private:
  int64_t out_, k_, rows_;
  FloatBuffer weights_;
  std::vector<float> bias_;
  kernels::Activation act_;
};

class SoftmaxOp : public Op {
 public:
  SoftmaxOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kNative, "input");
    if (x.shape != y.shape || y.layout != kNative) fail(s, "output must match input " + dims_str(x.shape));
    inner_ = x.shape.back();
    rows_ = static_cast<int64_t>(x.numel) / inner_;
    beta_ = static_cast<float>(get_float(s, "beta", 1.0));
  }
  const char* family() const override { return "elementwise"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    for (int64_t r = 0; r < rows_; ++r) {
      const float* xr = x + r * inner_;
      float* yr = y + r * inner_;
      float mx = xr[0];
      for (int64_t i = 1; i < inner_; ++i) mx = std::max(mx, xr[i]);
      double sum = 0.0;
      for (int64_t i = 0; i < inner_; ++i) sum += (yr[i] = std::exp((xr[i] - mx) * beta_));
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t i = 0; i < inner_; ++i) yr[i] *= inv;
    }
  }

 private:
  int64_t inner_, rows_;
  float beta_;
};

}  // namespace

std::unique_ptr<Op> make_fully_connected(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<FullyConnectedOp>(s, t); }
std::unique_ptr<Op> make_softmax(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<SoftmaxOp>(s, t); }

}  // namespace spruce
