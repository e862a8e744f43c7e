// int8 FULLY_CONNECTED (and a 1x1 conv on a 1x1 image): rows of inputs
// against row-major [outputs][inputs] weights.
#include "ops/ops.h"
#include "ops/quantized_common.h"

namespace spruce {

namespace {

class QFullyConnectedOp : public Op {
 public:
  QFullyConnectedOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    auto flat_ok = [](const Tensor& v) { return v.layout == kNative || (v.shape[1] == 1 && v.shape[2] == 1); };
    if (!flat_ok(x) || !flat_ok(y)) fail(s, "input and output must be row-major");
    const Array& wa = get_array(s, "weights");
    if (wa.shape.size() != 2) fail(s, "weights must be 2-D; received " + dims_str(wa.shape));
    o_ = wa.shape[0], k_ = wa.shape[1];
    if (k_ < 1 || x.numel % static_cast<size_t>(k_) != 0) {
      fail(s, "input " + dims_str(x.shape) + " is not whole rows of " + std::to_string(k_) + " values");
    }
    rows_ = static_cast<int64_t>(x.numel) / k_;
    if (static_cast<int64_t>(y.numel) != rows_ * o_) {
      fail(s, "output " + dims_str(y.shape) + " should hold " + std::to_string(rows_) + " rows of " + std::to_string(o_));
    }
    w_ = int8_array(s, "weights", {o_, k_});
    bias_ = int32_bias(s, o_);
    const int32_t zp = zero_point(s, "input_zero_point");
    for (int64_t o = 0; o < o_; ++o) {
      int64_t sum = 0;
      for (int64_t i = 0; i < k_; ++i) sum += w_[o * k_ + i];
      bias_[o] = static_cast<int32_t>(bias_[o] - (zp + 128) * sum);
    }
    scale_ = requant_scales(s, o_);
    out_ = qs8_output(s);
  }
  const char* family() const override { return "fully_connected_s8"; }
  double flops() const override { return 2.0 * static_cast<double>(rows_ * o_ * k_); }
  size_t scratch_floats() const override { return static_cast<size_t>(k_ + 3) / 4 + 16; }
  void run(const RunContext& ctx) const override {
    const int8_t* x = (*ctx.tensors)[inputs[0]].s8();
    int8_t* y = (*ctx.tensors)[outputs[0]].s8();
    uint8_t* xu = reinterpret_cast<uint8_t*>(ctx.scratch);
    for (int64_t r = 0; r < rows_; ++r) {
      kernels::qs8_to_u8(x + r * k_, xu, k_);
      auto outputs_range = [&](size_t ob, size_t oe) {
        kernels::qs8_fully_connected(xu, w_.data(), bias_.data(), scale_.data(), out_, y + r * o_, k_,
                                     static_cast<int64_t>(ob), static_cast<int64_t>(oe), kernels::default_isa());
      };
      if (ctx.pool->num_threads() == 1 || flops() / static_cast<double>(rows_) < kParallelMinFlops) {
        outputs_range(0, static_cast<size_t>(o_));
      } else {
        ctx.pool->parallel_for(static_cast<size_t>(o_), 16, outputs_range);
      }
    }
  }

 private:
  int64_t o_, k_, rows_;
  std::vector<int8_t> w_;
  std::vector<int32_t> bias_;
  std::vector<float> scale_;
  kernels::QS8Output out_;
};

}  // namespace

std::unique_ptr<Op> make_qfully_connected(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QFullyConnectedOp>(s, t);
}

}  // namespace spruce
