// int8 element-wise operators: QUANTIZE (float32 -> int8), DEQUANTIZE
// (int8 -> float32) and ADD of two int8 tensors, with XNNPACK's arithmetic.
#include <cmath>
#include <cstring>

#include "ops/ops.h"
#include "ops/quantized_common.h"

namespace spruce {

namespace {

void expect_same_elements(const OpSpec& s, const Tensor& a, const Tensor& b) {
  if (a.shape != b.shape || a.layout != b.layout) {
    fail(s, "input and output must have one shape and layout; received " + dims_str(a.shape) + " and " +
                dims_str(b.shape));
  }
}

// y = round(clamp(x / scale, -128 - zp, 127 - zp)) + zp, dividing as a
// multiplication by the float32 inverse of the scale (as XNNPACK does).
class QuantizeOp : public Op {
 public:
  QuantizeOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kFloat32, "input");
    expect_dtype(s, y, kInt8, "output");
    expect_same_elements(s, x, y);
    inverse_ = static_cast<float>(get_float(s, "inverse_scale", 0.0));
    if (!(inverse_ > 0.0f) || !std::isfinite(inverse_)) {
      fail(s, "inverse_scale must be positive and finite. Received: " + std::to_string(inverse_));
    }
    zp_ = zero_point(s, "zero_point");
    n_ = x.numel;
  }
  const char* family() const override { return "convert_s8"; }
  void run(const RunContext& ctx) const override {
    kernels::qs8_quantize((*ctx.tensors)[inputs[0]].data, (*ctx.tensors)[outputs[0]].s8(),
                          static_cast<int64_t>(n_), inverse_, zp_, kernels::default_isa());
  }

 private:
  float inverse_;
  int32_t zp_;
  size_t n_;
};

class DequantizeOp : public Op {
 public:
  DequantizeOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kFloat32, "output");
    expect_same_elements(s, x, y);
    scale_ = static_cast<float>(get_float(s, "scale", 0.0));
    if (!(scale_ > 0.0f) || !std::isfinite(scale_)) fail(s, "scale must be positive and finite");
    zp_ = zero_point(s, "zero_point");
    n_ = x.numel;
  }
  const char* family() const override { return "convert_s8"; }
  void run(const RunContext& ctx) const override {
    const int8_t* x = (*ctx.tensors)[inputs[0]].s8();
    float* y = (*ctx.tensors)[outputs[0]].data;
    for (size_t i = 0; i < n_; ++i) y[i] = static_cast<float>(x[i] - zp_) * scale_;
  }

 private:
  float scale_;
  int32_t zp_;
  size_t n_;
};

// XNNPACK's qs8 addition: both inputs scaled to the output by fixed-point
// multipliers of 20-21 bits sharing one shift, the rounding folded into the
// bias, then an arithmetic shift (rounding halves up).
class QAddOp : public Op {
 public:
  QAddOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 2, 2, 1);
    const Tensor& a = in_t(s, t, 0);
    const Tensor& b = in_t(s, t, 1);
    const Tensor& y = out_t(s, t, 0);
    for (const Tensor* v : {&a, &b, &y}) expect_dtype(s, *v, kInt8, "every tensor");
    expect_same_elements(s, a, y);
    expect_same_elements(s, b, y);
    const float sa = static_cast<float>(get_float(s, "a_scale", 0.0));
    const float sb = static_cast<float>(get_float(s, "b_scale", 0.0));
    const float so = static_cast<float>(get_float(s, "output_scale", 0.0));
    for (float v : {sa, sb, so}) {
      if (!(v > 0.0f) || !std::isfinite(v)) fail(s, "scales must be positive and finite");
    }
    const float ra = sa / so, rb = sb / so;
    const float rmax = std::max(ra, rb);
    if (!(ra >= 0x1.0p-10f && rb >= 0x1.0p-10f && rmax < 0x1.0p+8f)) {
      fail(s, "input to output scale ratios must be in [2^-10, 2^8). Received: " + std::to_string(ra) + ", " +
                  std::to_string(rb));
    }
    uint32_t bits;
    std::memcpy(&bits, &rmax, sizeof(bits));
    const int32_t exponent = static_cast<int32_t>(bits >> 23) - 127;
    shift_ = 20 - exponent;
    // ldexp is exact here: it scales a normal float by a power of two.
    mul_a_ = static_cast<int32_t>(std::lrint(std::ldexp(ra, shift_)));
    mul_b_ = static_cast<int32_t>(std::lrint(std::ldexp(rb, shift_)));
    const int32_t za = zero_point(s, "a_zero_point"), zb = zero_point(s, "b_zero_point");
    bias_ = (int32_t{1} << (shift_ - 1)) - mul_a_ * za - mul_b_ * zb;
    out_ = qs8_output(s);
    n_ = y.numel;
  }
  const char* family() const override { return "elementwise_s8"; }
  void run(const RunContext& ctx) const override {
    const int8_t* a = (*ctx.tensors)[inputs[0]].s8();
    const int8_t* b = (*ctx.tensors)[inputs[1]].s8();
    int8_t* y = (*ctx.tensors)[outputs[0]].s8();
    const int32_t lo = static_cast<int32_t>(out_.lo) + out_.zero_point;
    const int32_t hi = static_cast<int32_t>(out_.hi) + out_.zero_point;
    for (size_t i = 0; i < n_; ++i) {
      int32_t v = ((bias_ + a[i] * mul_a_ + b[i] * mul_b_) >> shift_) + out_.zero_point;
      v = v < lo ? lo : v;
      y[i] = static_cast<int8_t>(v > hi ? hi : v);
    }
  }

 private:
  int32_t shift_, mul_a_, mul_b_, bias_;
  kernels::QS8Output out_;
  size_t n_;
};

}  // namespace

std::unique_ptr<Op> make_quantize(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QuantizeOp>(s, t);
}
std::unique_ptr<Op> make_dequantize(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<DequantizeOp>(s, t);
}
std::unique_ptr<Op> make_qadd(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QAddOp>(s, t);
}

}  // namespace spruce
