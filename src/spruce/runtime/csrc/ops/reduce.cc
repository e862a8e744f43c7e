// MEAN over any set of axes, in memory order (LayerNormalization's mean over
// channels; the mean over height and width runs in layout.cc's mean_hw). The
// reduced axes are given as a bit mask of logical axes. With keep_dims the
// output has the input's rank and layout, the reduced dims set to 1; without,
// both are row-major and the output's shape is the input's kept dims.
#include <algorithm>

#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

constexpr int64_t kMaxRank = 6;  // the plan's largest rank

class MeanOp : public Op {
 public:
  MeanOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank < 1 || rank > kMaxRank) fail(s, "input rank must be in [1, 6]. Received: " + dims_str(x.shape));
    const int64_t mask = get_int(s, "axes");
    if (mask < 1 || mask >= (int64_t{1} << rank)) {
      fail(s, "axes must be a nonzero bit mask of the input's " + std::to_string(rank) +
                  " axes. Received: axes=" + std::to_string(mask));
    }
    std::vector<int64_t> kept_shape, keep_dims_shape;
    for (int64_t a = 0; a < rank; ++a) {
      const bool reduced = (mask >> a) & 1;
      keep_dims_shape.push_back(reduced ? 1 : x.shape[a]);
      if (!reduced) kept_shape.push_back(x.shape[a]);
    }
    const bool keep_dims = y.shape.size() == x.shape.size();
    if (keep_dims) {
      if (y.shape != keep_dims_shape || y.layout != x.layout) {
        fail(s, "output should have shape " + dims_str(keep_dims_shape) + " in the input's layout; the plan says " +
                    dims_str(y.shape));
      }
    } else {
      expect_layout(s, x, kNative, "input");
      expect_layout(s, y, kNative, "output");
      if (y.shape != kept_shape) {
        fail(s, "output should have shape " + dims_str(kept_shape) + "; the plan says " + dims_str(y.shape));
      }
    }
    // Memory-order dims, adjacent ones that are reduced alike merged.
    static const int64_t kChwAxis[4] = {0, 3, 1, 2};  // memory place -> logical axis
    const std::vector<int64_t> mem = x.mem_shape();
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t axis = x.layout == kCHW && rank == 4 ? kChwAxis[d] : d;
      const bool reduced = (mask >> axis) & 1;
      if (reduced) count_ *= mem[static_cast<size_t>(d)];
      if (mem[static_cast<size_t>(d)] == 1) continue;
      if (!dims_.empty() && reduced_.back() == reduced) {
        dims_.back() *= mem[static_cast<size_t>(d)];
      } else {
        dims_.push_back(mem[static_cast<size_t>(d)]);
        reduced_.push_back(reduced);
      }
    }
    if (dims_.empty()) dims_.push_back(1), reduced_.push_back(true);
    out_numel_ = y.numel;
  }
  const char* family() const override { return "reduce"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    std::fill(y, y + out_numel_, 0.0f);
    sum(0, x, y);
    const float scale = 1.0f / static_cast<float>(count_);
    for (size_t i = 0; i < out_numel_; ++i) y[i] *= scale;
  }

 private:
  // Adds the block of merged dims [d, end) at x into the block of kept dims at y.
  // The last dim is contiguous: a reduced one sums a run into one value, a kept
  // one adds a row of values (over a channel-major tensor's channels, a plane).
  void sum(size_t d, const float* x, float* y) const {
    const int64_t n = dims_[d];
    if (d + 1 == dims_.size()) {
      if (reduced_[d]) {
        float acc = 0.0f;
        for (int64_t i = 0; i < n; ++i) acc += x[i];
        *y += acc;
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] += x[i];
      }
      return;
    }
    int64_t x_step = 1, y_step = 1;
    for (size_t e = d + 1; e < dims_.size(); ++e) {
      x_step *= dims_[e];
      if (!reduced_[e]) y_step *= dims_[e];
    }
    for (int64_t i = 0; i < n; ++i) sum(d + 1, x + i * x_step, reduced_[d] ? y : y + i * y_step);
  }

  std::vector<int64_t> dims_;
  std::vector<bool> reduced_;
  int64_t count_ = 1;
  size_t out_numel_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_mean(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<MeanOp>(s, t);
}

}  // namespace spruce
