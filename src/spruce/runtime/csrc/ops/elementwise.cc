// Element-wise operators: activations (RELU ... HARD_SWISH) and ADD / MUL /
// SUB / DIV with broadcasting. Both work in memory order, so they serve either layout.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

constexpr size_t kParallelMin = 1 << 15;  // elements below which threads cost more than they save

// kSwish is x * LOGISTIC(x), a LOGISTIC and a MUL that the loader fused. NEG and
// RSQRT come from LayerNormalization, GELU (erf, or tanh when approximate) from
// ConvNeXt's blocks.
enum Unary : int {
  kRelu, kRelu6, kReluN1To1, kLeakyRelu, kElu, kLogistic, kHardSwish, kTanh, kSwish,
  kNeg, kRsqrt, kGelu, kGeluTanh,
};

class UnaryOp : public Op {
 public:
  UnaryOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    if (x.shape != y.shape || x.layout != y.layout) {
      fail(s, "output " + dims_str(y.shape) + " must match input " + dims_str(x.shape));
    }
    fn_ = static_cast<int>(get_int(s, "function"));
    if (fn_ < kRelu || fn_ > kGeluTanh) fail(s, "unknown activation function " + std::to_string(fn_));
    alpha_ = static_cast<float>(get_float(s, "alpha", 0.2));
    n_ = x.numel;
  }
  const char* family() const override { return "elementwise"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    auto body = [&](size_t b, size_t e) { apply(x + b, y + b, e - b); };
    if (n_ >= kParallelMin) ctx.pool->parallel_for(n_, 4096, body);
    else body(0, n_);
  }

 private:
  void apply(const float* x, float* y, size_t n) const {
    const float a = alpha_;
    switch (fn_) {
      case kRelu: for (size_t i = 0; i < n; ++i) y[i] = std::max(x[i], 0.0f); break;
      case kRelu6: for (size_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], 0.0f), 6.0f); break;
      case kReluN1To1: for (size_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], -1.0f), 1.0f); break;
      case kLeakyRelu: for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : a * x[i]; break;
      case kElu: kernels::unary(kernels::UnaryFn::kElu, x, y, n); break;
      case kLogistic: kernels::unary(kernels::UnaryFn::kSigmoid, x, y, n); break;
      case kHardSwish: kernels::unary(kernels::UnaryFn::kHardSwish, x, y, n); break;
      case kTanh: kernels::unary(kernels::UnaryFn::kTanh, x, y, n); break;
      case kSwish: kernels::unary(kernels::UnaryFn::kSwish, x, y, n); break;
      case kNeg: for (size_t i = 0; i < n; ++i) y[i] = -x[i]; break;
      case kRsqrt: for (size_t i = 0; i < n; ++i) y[i] = 1.0f / std::sqrt(x[i]); break;
      case kGelu: kernels::gelu(x, y, n, false); break;
      case kGeluTanh: kernels::gelu(x, y, n, true); break;
    }
  }
  int fn_ = 0;
  float alpha_ = 0.2f;
  size_t n_ = 0;
};

// po[i] = f(pa[i * ia], pb[i * ib]) for i < n. The strides are 1 or 0 (a value
// broadcast along the row, as a squeeze-excite scale is over a channel's plane)
// in the common cases, which get loops the compiler vectorises.
template <typename F>
inline void combine(const float* pa, int64_t ia, const float* pb, int64_t ib, float* po, int64_t n, F f) {
  if (ia == 1 && ib == 1) {
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
  } else if (ia == 1 && ib == 0) {
    const float b = *pb;
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], b);
  } else if (ia == 0 && ib == 1) {
    const float a = *pa;
    for (int64_t i = 0; i < n; ++i) po[i] = f(a, pb[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i * ia], pb[i * ib]);
  }
}

// out = act(a (+|*|-|/) b), or (a - b)^2 for SQUARED_DIFFERENCE (no activation), shapes
// broadcast NumPy-style in memory order.
class BinaryOp : public Op {
 public:
  BinaryOp(const OpSpec& s, const std::vector<Tensor>& t, BinaryKind kind) : kind_(kind) {
    expect_arity(s, 2, 2, 1);
    const Tensor& a = in_t(s, t, 0);
    const Tensor& b = in_t(s, t, 1);
    const Tensor& o = out_t(s, t, 0);
    act_ = checked_activation(s);
    if (a.layout != o.layout || b.layout != o.layout) {
      fail(s, "inputs and output must share one layout");
    }
    if (a.shape.size() != o.shape.size() || b.shape.size() != o.shape.size()) {
      fail(s, "inputs " + dims_str(a.shape) + " and " + dims_str(b.shape) + " must have the rank of output " +
                  dims_str(o.shape));
    }
    std::vector<int64_t> am = a.mem_shape(), bm = b.mem_shape(), om = o.mem_shape();
    for (size_t i = 0; i < om.size(); ++i) {
      if ((am[i] != om[i] && am[i] != 1) || (bm[i] != om[i] && bm[i] != 1) ||
          std::max(am[i], bm[i]) != om[i]) {
        fail(s, "inputs " + dims_str(a.shape) + " and " + dims_str(b.shape) +
                    " do not broadcast to output " + dims_str(o.shape));
      }
    }
    // Coalesce adjacent dims that broadcast the same way for both inputs.
    for (size_t i = 0; i < om.size(); ++i) {
      if (om[i] == 1) continue;
      bool abc = am[i] == 1, bbc = bm[i] == 1;
      if (!dims_.empty() && abc == a_bcast_.back() && bbc == b_bcast_.back()) {
        dims_.back() *= om[i];
      } else {
        dims_.push_back(om[i]);
        a_bcast_.push_back(abc);
        b_bcast_.push_back(bbc);
      }
    }
    if (dims_.empty()) dims_.push_back(1), a_bcast_.push_back(false), b_bcast_.push_back(false);
    size_t r = dims_.size();
    a_stride_.assign(r, 0);
    b_stride_.assign(r, 0);
    int64_t sa = 1, sb = 1;
    for (size_t i = r; i-- > 0;) {
      if (!a_bcast_[i]) a_stride_[i] = sa, sa *= dims_[i];
      if (!b_bcast_[i]) b_stride_[i] = sb, sb *= dims_[i];
    }
    inner_ = dims_.back();
    rows_ = 1;
    for (size_t i = 0; i + 1 < r; ++i) rows_ *= dims_[i];
  }
  const char* family() const override { return "elementwise"; }
  void run(const RunContext& ctx) const override {
    const float* a = (*ctx.tensors)[inputs[0]].data;
    const float* b = (*ctx.tensors)[inputs[1]].data;
    float* o = (*ctx.tensors)[outputs[0]].data;
    float lo, hi;
    activation_range(act_, &lo, &hi);
    const size_t r = dims_.size();
    const int64_t ia = a_stride_[r - 1], ib = b_stride_[r - 1];
    // Elements [e0, e1) of row `row`.
    auto piece = [&](size_t row, int64_t e0, int64_t e1) {
      int64_t oa = 0, ob = 0, rem = static_cast<int64_t>(row);
      for (size_t d = r - 1; d-- > 0;) {
        int64_t idx = rem % dims_[d];
        rem /= dims_[d];
        oa += idx * a_stride_[d];
        ob += idx * b_stride_[d];
      }
      const float* pa = a + oa + e0 * ia;
      const float* pb = b + ob + e0 * ib;
      float* po = o + static_cast<int64_t>(row) * inner_ + e0;
      const int64_t n = e1 - e0;
      // The activation clamps each result as it is computed (one pass over the
      // output); min/max with infinite bounds leave every value as it was.
      auto fused = [lo, hi](auto f) { return [=](float u, float v) { return std::min(std::max(f(u, v), lo), hi); }; };
      switch (kind_) {
        case BinaryKind::kAdd: combine(pa, ia, pb, ib, po, n, fused([](float u, float v) { return u + v; })); break;
        case BinaryKind::kMul: combine(pa, ia, pb, ib, po, n, fused([](float u, float v) { return u * v; })); break;
        case BinaryKind::kSub: combine(pa, ia, pb, ib, po, n, fused([](float u, float v) { return u - v; })); break;
        case BinaryKind::kDiv: combine(pa, ia, pb, ib, po, n, fused([](float u, float v) { return u / v; })); break;
        case BinaryKind::kSquaredDifference:
          combine(pa, ia, pb, ib, po, n, fused([](float u, float v) { return (u - v) * (u - v); }));
          break;
      }
    };
    const size_t total = rows_ * static_cast<size_t>(inner_);
    if (total < kParallelMin) {
      for (size_t row = 0; row < rows_; ++row) piece(row, 0, inner_);
    } else if (rows_ > 1) {
      ctx.pool->parallel_for(rows_, 1, [&](size_t rb, size_t re) {
        for (size_t row = rb; row < re; ++row) piece(row, 0, inner_);
      });
    } else {
      // One long row (two tensors of one shape): split its elements instead.
      ctx.pool->parallel_for(static_cast<size_t>(inner_), 4096, [&](size_t e0, size_t e1) {
        piece(0, static_cast<int64_t>(e0), static_cast<int64_t>(e1));
      });
    }
  }

 private:
  BinaryKind kind_;
  int act_ = 0;
  std::vector<int64_t> dims_, a_stride_, b_stride_;
  std::vector<bool> a_bcast_, b_bcast_;
  int64_t inner_ = 1;
  size_t rows_ = 1;
};

}  // namespace

std::unique_ptr<Op> make_unary(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<UnaryOp>(s, t);
}
std::unique_ptr<Op> make_binary(const OpSpec& s, const std::vector<Tensor>& t, BinaryKind kind) {
  return std::make_unique<BinaryOp>(s, t, kind);
}

}  // namespace spruce
