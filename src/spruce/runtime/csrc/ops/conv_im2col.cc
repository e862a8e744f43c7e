// Convolutions with any kernel, stride and padding (no dilation) on
// channel-major activations, as a matrix product: the windows' pixels are
// copied into rows [I * kh * kw][pixels] (im2col), and the dense 1x1 kernel
// (kernels::gemm) multiplies them by the weights [O][I * kh * kw]. The plain
// loops of conv_general.cc stream each input plane once per weight; the kernel
// holds 4 output channels x 24 pixels in registers instead.
#include <algorithm>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"
#include "ops/im2col.h"

namespace spruce {

namespace {

// Pixels per piece of work: each piece copies its columns of the windows and
// multiplies them while they are in cache (a multiple of the kernel's 24-pixel tile).
constexpr int64_t kChunkPixels = 96;
// Images up to this many pixels are multiplied whole. The kernel walks pixels
// in its outer loop, reading every weight once per pixel tile, so the product
// is cut into calls of output channels whose weights stay in L2 (beside the
// copied windows) for the image's few tiles, rather than streaming all of them
// from memory once per tile. Calls of fewer rows would reread the windows from
// L2 once per call and keep the kernel from its 8-row register blocks.
constexpr int64_t kSmallImagePixels = 256;
constexpr int64_t kWeightBytesPerCall = 768 << 10;
// Largest copied-window matrix (floats) an op accepts (256 MiB).
constexpr int64_t kMaxColumnsFloats = int64_t{1} << 26;

class ConvIm2colOp : public Op {
 public:
  ConvIm2colOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 2, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    const Window2D win = read_window2d(s, 1 << 16);
    kh_ = win.kh, kw_ = win.kw;
    n_ = x.shape[0], ih_ = x.shape[1], iw_ = x.shape[2], ic_ = x.shape[3];
    oh_ = y.shape[1], ow_ = y.shape[2], oc_ = y.shape[3];
    expect_window_output(s, win, x, y);
    pixels_ = oh_ * ow_;
    im2col_ = Im2col{ih_, iw_, ow_, pixels_, win};
    k_ = ic_ * kh_ * kw_;
    if (k_ > INT32_MAX || oc_ > INT32_MAX || k_ * pixels_ > kMaxColumnsFloats) {
      fail(s, "too large to run as a matrix product: " + std::to_string(k_) + " window values x " +
                  std::to_string(pixels_) + " pixels");
    }
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {oc_, kh_, kw_, ic_}, "weights");
    const std::vector<float> rows = window_weight_rows(w.data.data(), 0, oc_, kh_, kw_, ic_);
    packed_ = kernels::pack_dense(rows.data(), static_cast<int32_t>(oc_), static_cast<int32_t>(k_));
    const int64_t panel = packed_.panel;
    rows_per_call_ = std::max<int64_t>(panel, kWeightBytesPerCall / (k_ * 4) / panel * panel);
    residual_ = s.inputs.size() == 2;
    if (residual_) expect_residual(s, t, y);
    bias_ = bias_or_zeros(s, oc_);
    const int act = checked_epilogue_activation(s);
    activation_range(act, &act_.min, &act_.max);
    act_.hard_swish = act == kActHardSwishEpilogue;
    swish_ = act == kActSwishEpilogue;
  }
  const char* family() const override { return "conv_im2col"; }
  double flops() const override { return 2.0 * n_ * pixels_ * oc_ * k_; }
  size_t scratch_floats() const override { return static_cast<size_t>(k_ * pixels_); }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    const float* skip = residual_ ? (*ctx.tensors)[inputs[1]].data : nullptr;
    const int threads = ctx.pool->num_threads();
    const bool parallel = threads > 1 && flops() / n_ >= kParallelMinFlops;
    const int64_t chunk = pixels_ <= kSmallImagePixels ? pixels_ : kChunkPixels;
    for (int64_t n = 0; n < n_; ++n) {
      const float* xi = x + n * ic_ * ih_ * iw_;
      float* yi = y + n * oc_ * pixels_;
      const float* si = skip != nullptr ? skip + n * oc_ * pixels_ : nullptr;
      // Output channels [n0, n1) of pixels [p0, p1), a few rows of weights at a time.
      auto multiply = [&](int64_t p0, int64_t p1, int64_t n0, int64_t n1) {
        for (int64_t r = n0; r < n1; r += rows_per_call_) {
          const int64_t re = std::min(n1, r + rows_per_call_);
          kernels::gemm(packed_, bias_.data(), ctx.scratch, pixels_, yi, pixels_, static_cast<int32_t>(r),
                        static_cast<int32_t>(re), p0, p1, act_, si);
          if (swish_) kernels::swish_rows(yi, pixels_, r, re, p0, p1);
        }
      };
      if (pixels_ > chunk && (!parallel || pixels_ >= 2 * chunk * threads)) {
        auto pixels = [&](size_t b, size_t e) {
          for (int64_t p = static_cast<int64_t>(b); p < static_cast<int64_t>(e); p += chunk) {
            const int64_t pe = std::min<int64_t>(static_cast<int64_t>(e), p + chunk);
            im2col_.copy(xi, ctx.scratch, 0, ic_, p, pe);
            multiply(p, pe, 0, oc_);
          }
        };
        if (parallel) ctx.pool->parallel_for(static_cast<size_t>(pixels_), static_cast<size_t>(chunk), pixels);
        else pixels(0, static_cast<size_t>(pixels_));
      } else {
        // Few pixels (7x7, 14x14): copy the windows once, then split output channels.
        im2col_.copy(xi, ctx.scratch, 0, ic_, 0, pixels_);
        if (parallel) {
          ctx.pool->parallel_for(static_cast<size_t>(oc_), static_cast<size_t>(rows_per_call_), [&](size_t b, size_t e) {
            multiply(0, pixels_, static_cast<int64_t>(b), static_cast<int64_t>(e));
          });
        } else {
          multiply(0, pixels_, 0, oc_);
        }
      }
    }
  }

 private:
  int64_t kh_, kw_;
  int64_t n_, ih_, iw_, ic_, oh_, ow_, oc_, pixels_, k_;
  int64_t rows_per_call_ = 4;  // output channels per kernel call (a multiple of the panel)
  bool residual_ = false;      // a second input added before the activation (a fused ADD)
  Im2col im2col_;
  kernels::PackedDense packed_;
  std::vector<float> bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each piece of output, just written
};

}  // namespace

std::unique_ptr<Op> make_conv_im2col(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<ConvIm2colOp>(s, t);
}

}  // namespace spruce
