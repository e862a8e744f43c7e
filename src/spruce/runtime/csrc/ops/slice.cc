// STRIDED_SLICE with positive strides (NASNet's Cropping2D), in memory order:
// output element (i0, i1, ...) is input element (begin0 + i0 * stride0, ...), on
// tensors of one rank and layout (the loader resolves the masks, and reshapes
// after it for shrunk axes). Along a channel-major tensor's channels it copies
// whole planes, along its rows and columns runs of each plane.
#include <cmath>
#include <cstring>
#include <string>

#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

constexpr int64_t kMaxStride = int64_t{1} << 20;

// A plan's number as written: whole numbers in range without a fraction.
std::string number_str(float v) {
  const bool whole = v > -1e9f && v < 1e9f && std::floor(v) == v;
  return whole ? std::to_string(static_cast<int64_t>(v)) : std::to_string(v);
}

// Whether v is a whole number in [lo, hi] (checked before any conversion to an integer).
bool whole_in(float v, int64_t lo, int64_t hi) {
  return v >= static_cast<float>(lo) && v <= static_cast<float>(hi) && std::floor(v) == v;
}

class SliceOp : public Op {
 public:
  SliceOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    if (x.shape.size() != y.shape.size() || x.layout != y.layout) {
      fail(s, "input " + dims_str(x.shape) + " and output " + dims_str(y.shape) + " must share rank and layout");
    }
    const size_t rank = x.shape.size();
    const Array& begin = get_array(s, "begin");
    const Array& stride = get_array(s, "stride");
    expect_array(s, begin, {static_cast<int64_t>(rank)}, "begin");
    expect_array(s, stride, {static_cast<int64_t>(rank)}, "stride");
    std::vector<int64_t> b(rank), st(rank);
    for (size_t d = 0; d < rank; ++d) {
      if (!whole_in(begin.data[d], 0, x.shape[d] - 1)) {
        fail(s, "begin must be in [0, " + std::to_string(x.shape[d]) + ") along axis " + std::to_string(d) +
                    ". Received: " + number_str(begin.data[d]));
      }
      if (!whole_in(stride.data[d], 1, kMaxStride)) {
        fail(s, "stride must be in [1, " + std::to_string(kMaxStride) + "] along axis " + std::to_string(d) +
                    ". Received: " + number_str(stride.data[d]));
      }
      b[d] = static_cast<int64_t>(begin.data[d]);
      st[d] = static_cast<int64_t>(stride.data[d]);
      if (b[d] + (y.shape[d] - 1) * st[d] >= x.shape[d]) {
        fail(s, "output " + dims_str(y.shape) + " reads past input " + dims_str(x.shape) + " along axis " +
                    std::to_string(d));
      }
    }
    // Logical axis of each memory dim.
    std::vector<size_t> axis(rank);
    for (size_t d = 0; d < rank; ++d) axis[d] = d;
    if (x.layout == kCHW && rank == 4) axis = {0, 3, 1, 2};
    const std::vector<int64_t> xm = x.mem_shape();
    in_step_.assign(rank, 1);
    for (size_t d = rank - 1; d-- > 0;) in_step_[d] = in_step_[d + 1] * xm[d + 1];
    offset_ = 0;
    for (size_t d = 0; d < rank; ++d) {
      offset_ += b[axis[d]] * in_step_[d];
      in_step_[d] *= st[axis[d]];
      out_dims_.push_back(y.mem_shape()[d]);
    }
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    copy(0, x + offset_, y);
  }

 private:
  // Copies the block of memory dims [d, end) from x into y; returns the end of y's block.
  float* copy(size_t d, const float* x, float* y) const {
    const int64_t n = out_dims_[d];
    if (d + 1 == out_dims_.size()) {
      if (in_step_[d] == 1) {
        std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] = x[i * in_step_[d]];
      }
      return y + n;
    }
    for (int64_t i = 0; i < n; ++i) y = copy(d + 1, x + i * in_step_[d], y);
    return y;
  }

  std::vector<int64_t> out_dims_;  // the output's memory-order dims
  std::vector<int64_t> in_step_;   // floats between consecutive outputs along each, in the input
  int64_t offset_ = 0;             // the first element read
};

}  // namespace

std::unique_ptr<Op> make_slice(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<SliceOp>(s, t);
}

}  // namespace spruce
