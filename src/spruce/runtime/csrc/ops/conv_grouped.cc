// Grouped convolutions (Conv2D(groups=g): RegNet's and ResNeXt-style blocks) on
// channel-major activations. Group j reads input channels [j * I/g, (j+1) * I/g)
// and writes output channels [j * O/g, (j+1) * O/g); TFLite stores the weights
// as [O, kh, kw, I/g]. In CHW a group's input planes are contiguous, so the
// windows of every channel are copied once into rows [I * kh * kw][pixels]
// (im2col; group j's rows are one contiguous block of them) and each group is a
// dense matrix product of its weights [O/g][I/g * kh * kw] with its block
// (kernels::gemm), written straight into its output planes. Convolutions with one
// input channel a group are depthwise ones, which the loader sends to the
// depthwise kernels instead.
#include <algorithm>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"
#include "ops/im2col.h"

namespace spruce {

namespace {

// Pixels per piece of work on large images: each piece copies its columns of
// the windows and multiplies them while they are in cache.
constexpr int64_t kChunkPixels = 96;
// Largest copied-window matrix (floats) an op accepts (256 MiB).
constexpr int64_t kMaxColumnsFloats = int64_t{1} << 26;

class ConvGroupedOp : public Op {
 public:
  ConvGroupedOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 2, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    const Window2D win = read_window2d(s, 1 << 16);
    kh_ = win.kh, kw_ = win.kw;
    expect_window_output(s, win, x, y);
    n_ = x.shape[0], ih_ = x.shape[1], iw_ = x.shape[2], ic_ = x.shape[3];
    oh_ = y.shape[1], ow_ = y.shape[2], oc_ = y.shape[3];
    groups_ = get_int(s, "groups");
    if (groups_ < 1 || ic_ % groups_ != 0 || oc_ % groups_ != 0) {
      fail(s, "groups must divide the input channels " + std::to_string(ic_) + " and the output channels " +
                  std::to_string(oc_) + ". Received: groups=" + std::to_string(groups_));
    }
    gi_ = ic_ / groups_, go_ = oc_ / groups_;
    pixels_ = oh_ * ow_;
    im2col_ = Im2col{ih_, iw_, ow_, pixels_, win};
    gk_ = gi_ * kh_ * kw_;
    if (gk_ * groups_ * pixels_ > kMaxColumnsFloats || go_ > INT32_MAX) {
      fail(s, "too large to run as matrix products: " + std::to_string(gk_ * groups_) + " window values x " +
                  std::to_string(pixels_) + " pixels");
    }
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {oc_, kh_, kw_, gi_}, "weights");
    // Each group's weights as rows in its block's order.
    for (int64_t g = 0; g < groups_; ++g) {
      const std::vector<float> rows = window_weight_rows(w.data.data(), g * go_, (g + 1) * go_, kh_, kw_, gi_);
      packed_.push_back(kernels::pack_dense(rows.data(), static_cast<int32_t>(go_), static_cast<int32_t>(gk_)));
    }
    residual_ = s.inputs.size() == 2;
    if (residual_) expect_residual(s, t, y);
    bias_ = bias_or_zeros(s, oc_);
    const int act = checked_epilogue_activation(s);
    activation_range(act, &act_.min, &act_.max);
    act_.hard_swish = act == kActHardSwishEpilogue;
    swish_ = act == kActSwishEpilogue;
  }
  const char* family() const override { return "conv_grouped"; }
  double flops() const override { return 2.0 * n_ * pixels_ * oc_ * gk_; }
  size_t scratch_floats() const override { return static_cast<size_t>(gk_ * groups_ * pixels_); }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    const float* skip = residual_ ? (*ctx.tensors)[inputs[1]].data : nullptr;
    const bool parallel = ctx.pool->num_threads() > 1 && flops() / n_ >= kParallelMinFlops;
    for (int64_t n = 0; n < n_; ++n) {
      const float* xi = x + n * ic_ * ih_ * iw_;
      float* yi = y + n * oc_ * pixels_;
      const float* si = skip != nullptr ? skip + n * oc_ * pixels_ : nullptr;
      // Groups [g0, g1) over pixels [p0, p1), from windows already copied.
      auto multiply = [&](int64_t g0, int64_t g1, int64_t p0, int64_t p1) {
        for (int64_t g = g0; g < g1; ++g) {
          const int64_t o0 = g * go_;
          kernels::gemm(packed_[static_cast<size_t>(g)], bias_.data() + o0, ctx.scratch + g * gk_ * pixels_, pixels_,
                        yi + o0 * pixels_, pixels_, 0, static_cast<int32_t>(go_), p0, p1, act_,
                        si != nullptr ? si + o0 * pixels_ : nullptr);
          if (swish_) kernels::swish_rows(yi + o0 * pixels_, pixels_, 0, go_, p0, p1);
        }
      };
      if (pixels_ > 2 * kChunkPixels) {
        // Large images: pieces of pixels, each copied and multiplied for every group.
        auto pieces = [&](size_t b, size_t e) {
          for (int64_t p = static_cast<int64_t>(b); p < static_cast<int64_t>(e); p += kChunkPixels) {
            const int64_t pe = std::min<int64_t>(static_cast<int64_t>(e), p + kChunkPixels);
            im2col_.copy(xi, ctx.scratch, 0, ic_, p, pe);
            multiply(0, groups_, p, pe);
          }
        };
        if (parallel) ctx.pool->parallel_for(static_cast<size_t>(pixels_), static_cast<size_t>(kChunkPixels), pieces);
        else pieces(0, static_cast<size_t>(pixels_));
      } else {
        // Few pixels: each group copies its own channels' windows, then multiplies them.
        auto groups = [&](size_t b, size_t e) {
          for (int64_t g = static_cast<int64_t>(b); g < static_cast<int64_t>(e); ++g) {
            im2col_.copy(xi, ctx.scratch, g * gi_, (g + 1) * gi_, 0, pixels_);
            multiply(g, g + 1, 0, pixels_);
          }
        };
        if (parallel) ctx.pool->parallel_for(static_cast<size_t>(groups_), 1, groups);
        else groups(0, static_cast<size_t>(groups_));
      }
    }
  }

 private:
  int64_t kh_, kw_;
  int64_t n_, ih_, iw_, ic_, oh_, ow_, oc_, groups_, gi_, go_, pixels_, gk_;
  bool residual_ = false;  // a second input added before the activation (a fused ADD)
  Im2col im2col_;
  std::vector<kernels::PackedDense> packed_;  // one per group
  std::vector<float> bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each piece of output, just written
};

}  // namespace

std::unique_ptr<Op> make_conv_grouped(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<ConvGroupedOp>(s, t);
}

}  // namespace spruce
