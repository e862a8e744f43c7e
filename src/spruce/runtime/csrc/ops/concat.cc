// CONCATENATION along one axis, in memory order: every input and the output
// share one layout, so the output is, for each index of the dims before the
// axis, each input's contiguous block one after the other (along channels of a
// channel-major tensor: each input's planes of an image).
#include <cstring>

#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

class ConcatOp : public Op {
 public:
  ConcatOp(const OpSpec& s, const std::vector<Tensor>& t) {
    if (s.inputs.empty() || s.inputs.size() > 4096) fail(s, "needs 1 to 4096 inputs");
    expect_arity(s, s.inputs.size(), s.inputs.size(), 1);
    const Tensor& y = out_t(s, t, 0);
    const int64_t rank = static_cast<int64_t>(y.shape.size());
    const int64_t axis = get_int(s, "axis");
    if (axis < 0 || axis >= rank) {
      fail(s, "axis must be in [0, " + std::to_string(rank) + "). Received: axis=" + std::to_string(axis));
    }
    // The logical axis's place in memory ([N, C, H, W] for channel-major).
    static const int64_t kChwPlace[4] = {0, 2, 3, 1};
    const int64_t mem_axis = y.layout == kCHW ? kChwPlace[axis] : axis;
    const std::vector<int64_t> om = y.mem_shape();
    int64_t total = 0;
    for (size_t i = 0; i < s.inputs.size(); ++i) {
      const Tensor& x = in_t(s, t, i);
      if (x.layout != y.layout || x.shape.size() != y.shape.size()) {
        fail(s, "input " + std::to_string(i) + " " + dims_str(x.shape) + " must have the output's rank and layout");
      }
      for (int64_t d = 0; d < rank; ++d) {
        if (d != axis && x.shape[d] != y.shape[d]) {
          fail(s, "input " + std::to_string(i) + " " + dims_str(x.shape) + " differs from output " +
                      dims_str(y.shape) + " outside axis " + std::to_string(axis));
        }
      }
      total += x.shape[axis];
      int64_t block = 1;
      for (int64_t d = mem_axis; d < rank; ++d) block *= x.mem_shape()[d];
      blocks_.push_back(static_cast<size_t>(block));
    }
    if (total != y.shape[axis]) {
      fail(s, "inputs add up to " + std::to_string(total) + " along axis " + std::to_string(axis) +
                  "; the output has " + std::to_string(y.shape[axis]));
    }
    outer_ = 1;
    for (int64_t d = 0; d < mem_axis; ++d) outer_ *= static_cast<size_t>(om[d]);
  }
  const char* family() const override { return "layout"; }
  void run(const RunContext& ctx) const override {
    float* y = (*ctx.tensors)[outputs[0]].data;
    for (size_t o = 0; o < outer_; ++o) {
      for (size_t i = 0; i < blocks_.size(); ++i) {
        const float* x = (*ctx.tensors)[inputs[i]].data + o * blocks_[i];
        std::memcpy(y, x, blocks_[i] * sizeof(float));
        y += blocks_[i];
      }
    }
  }

 private:
  std::vector<size_t> blocks_;  // floats each input contributes per outer index
  size_t outer_ = 1;
};

}  // namespace

std::unique_ptr<Op> make_concat(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<ConcatOp>(s, t);
}

}  // namespace spruce
