// Convolutions with any kernel, stride and padding (no dilation) on
// channel-major activations, as a matrix product: the windows' pixels are
// copied into rows [I * kh * kw][pixels] (im2col), and the dense 1x1 kernel
// (kernels::gemm) multiplies them by the weights [O][I * kh * kw]. The plain
// loops of conv_general.cc stream each input plane once per weight; the kernel
// holds 4 output channels x 24 pixels in registers instead.
#include <algorithm>
#include <cstring>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"
#include "ops/window.h"

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
    kh_ = win.kh, kw_ = win.kw, sh_ = win.sh, sw_ = win.sw, top_ = win.top, left_ = win.left;
    n_ = x.shape[0], ih_ = x.shape[1], iw_ = x.shape[2], ic_ = x.shape[3];
    oh_ = y.shape[1], ow_ = y.shape[2], oc_ = y.shape[3];
    expect_window_output(s, win, x, y);
    pixels_ = oh_ * ow_;
    k_ = ic_ * kh_ * kw_;
    if (k_ > INT32_MAX || oc_ > INT32_MAX || k_ * pixels_ > kMaxColumnsFloats) {
      fail(s, "too large to run as a matrix product: " + std::to_string(k_) + " window values x " +
                  std::to_string(pixels_) + " pixels");
    }
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {oc_, kh_, kw_, ic_}, "weights");
    // [O][kh][kw][I] -> [O][I][kh][kw]: the order of the copied rows.
    std::vector<float> rows(static_cast<size_t>(oc_ * k_));
    for (int64_t o = 0; o < oc_; ++o)
      for (int64_t ky = 0; ky < kh_; ++ky)
        for (int64_t kx = 0; kx < kw_; ++kx)
          for (int64_t i = 0; i < ic_; ++i) {
            rows[static_cast<size_t>(o * k_ + (i * kh_ + ky) * kw_ + kx)] =
                w.data[static_cast<size_t>(((o * kh_ + ky) * kw_ + kx) * ic_ + i)];
          }
    packed_ = kernels::pack_dense(rows.data(), static_cast<int32_t>(oc_), static_cast<int32_t>(k_));
    const int64_t panel = packed_.panel;
    rows_per_call_ = std::max<int64_t>(panel, kWeightBytesPerCall / (k_ * 4) / panel * panel);
    residual_ = s.inputs.size() == 2;
    if (residual_) expect_residual(s, t, y);
    bias_.assign(static_cast<size_t>(oc_), 0.0f);
    if (const Array* b = find_array(s, "bias")) {
      expect_array(s, *b, {oc_}, "bias");
      bias_ = b->data;
    }
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
            columns(xi, ctx.scratch, p, pe);
            multiply(p, pe, 0, oc_);
          }
        };
        if (parallel) ctx.pool->parallel_for(static_cast<size_t>(pixels_), static_cast<size_t>(chunk), pixels);
        else pixels(0, static_cast<size_t>(pixels_));
      } else {
        // Few pixels (7x7, 14x14): copy the windows once, then split output channels.
        columns(xi, ctx.scratch, 0, pixels_);
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
  // Columns [p0, p1) of the window matrix: row (i, ky, kx) holds, for each
  // output pixel, the input pixel under tap (ky, kx) of channel i, or 0 in the padding.
  void columns(const float* image, float* scratch, int64_t p0, int64_t p1) const {
    for (int64_t i = 0; i < ic_; ++i) {
      const float* plane = image + i * ih_ * iw_;
      for (int64_t ky = 0; ky < kh_; ++ky) {
        for (int64_t kx = 0; kx < kw_; ++kx) {
          float* dst = scratch + ((i * kh_ + ky) * kw_ + kx) * pixels_;
          const int64_t x_off = kx - left_;
          // Output columns whose tap lands inside the row: 0 <= ox * sw + x_off < iw.
          const int64_t ox_lo = std::min(ow_, x_off >= 0 ? 0 : (-x_off + sw_ - 1) / sw_);
          const int64_t ox_hi = std::max(ox_lo, std::min(ow_, iw_ - x_off <= 0 ? 0 : (iw_ - x_off + sw_ - 1) / sw_));
          for (int64_t p = p0; p < p1;) {
            const int64_t oy = p / ow_, ox0 = p % ow_;
            const int64_t ox1 = std::min(ow_, ox0 + (p1 - p));
            const int64_t iy = oy * sh_ + ky - top_;
            float* d = dst + p - ox0;  // d[ox] is output pixel (oy, ox)
            if (iy < 0 || iy >= ih_) {
              std::fill(d + ox0, d + ox1, 0.0f);
            } else {
              const float* row = plane + iy * iw_ + x_off;
              const int64_t a = std::max(ox0, ox_lo), b = std::min(ox1, ox_hi);
              if (a >= b) {
                std::fill(d + ox0, d + ox1, 0.0f);
              } else {
                std::fill(d + ox0, d + a, 0.0f);
                if (sw_ == 1) {
                  std::memcpy(d + a, row + a, static_cast<size_t>(b - a) * sizeof(float));
                } else {
                  for (int64_t ox = a; ox < b; ++ox) d[ox] = row[ox * sw_];
                }
                std::fill(d + b, d + ox1, 0.0f);
              }
            }
            p += ox1 - ox0;
          }
        }
      }
    }
  }

  int64_t kh_, kw_, sh_, sw_, top_, left_;
  int64_t n_, ih_, iw_, ic_, oh_, ow_, oc_, pixels_, k_;
  int64_t rows_per_call_ = 4;  // output channels per kernel call (a multiple of the panel)
  bool residual_ = false;      // a second input added before the activation (a fused ADD)
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
