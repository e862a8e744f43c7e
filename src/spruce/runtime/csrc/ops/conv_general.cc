// The general convolution paths on channel-major activations: any kernel size,
// stride, dilation and padding, and depthwise convs with a depth multiplier.
// Plain loops: the hot shapes take the kernels of ops/conv.cc instead.
#include <algorithm>

#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

struct Geometry {
  int64_t kh, kw, sh, sw, dh, dw, top, left, bottom, right;
};

Geometry read_geometry(const OpSpec& s) {
  Geometry g{get_int(s, "kernel_h"), get_int(s, "kernel_w"), get_int(s, "stride_h"), get_int(s, "stride_w"),
             get_int(s, "dilation_h", 1), get_int(s, "dilation_w", 1), get_int(s, "pad_top"),
             get_int(s, "pad_left"), get_int(s, "pad_bottom"), get_int(s, "pad_right")};
  expect_positive(s, g.kh, "kernel height", 1024);
  expect_positive(s, g.kw, "kernel width", 1024);
  expect_positive(s, g.sh, "stride", 1024);
  expect_positive(s, g.sw, "stride", 1024);
  expect_positive(s, g.dh, "dilation", 1024);
  expect_positive(s, g.dw, "dilation", 1024);
  for (int64_t p : {g.top, g.left, g.bottom, g.right}) expect_nonneg(s, p, "padding", 1 << 16);
  return g;
}

void check_geometry(const OpSpec& s, const Geometry& g, const Tensor& x, const Tensor& y) {
  int64_t oh = conv_out_size(x.shape[1], g.kh, g.sh, g.dh, g.top, g.bottom);
  int64_t ow = conv_out_size(x.shape[2], g.kw, g.sw, g.dw, g.left, g.right);
  if (oh != y.shape[1] || ow != y.shape[2] || x.shape[0] != y.shape[0]) {
    fail(s, "input " + dims_str(x.shape) + " gives output " + std::to_string(oh) + "x" + std::to_string(ow) +
                " with this kernel, stride and padding; the plan says " + dims_str(y.shape));
  }
}

// out_plane += w * (input plane sampled at the window offset (ky, kx)).
void accumulate_tap(const float* in, int64_t ih, int64_t iw, float* out, int64_t oh, int64_t ow,
                    const Geometry& g, int64_t ky, int64_t kx, float w) {
  const int64_t y_off = ky * g.dh - g.top, x_off = kx * g.dw - g.left;
  // Valid ox: 0 <= ox * sw + x_off < iw.
  int64_t ox0 = x_off >= 0 ? 0 : (-x_off + g.sw - 1) / g.sw;
  int64_t ox1 = iw - x_off <= 0 ? 0 : std::min(ow, (iw - x_off + g.sw - 1) / g.sw);
  if (ox0 >= ox1) return;
  for (int64_t oy = 0; oy < oh; ++oy) {
    int64_t iy = oy * g.sh + y_off;
    if (iy < 0 || iy >= ih) continue;
    const float* row = in + iy * iw;
    float* orow = out + oy * ow;
    if (g.sw == 1) {
      for (int64_t ox = ox0; ox < ox1; ++ox) orow[ox] += w * row[ox + x_off];
    } else {
      for (int64_t ox = ox0; ox < ox1; ++ox) orow[ox] += w * row[ox * g.sw + x_off];
    }
  }
}

// What both general convs share: a CHW input and output, the window geometry,
// a bias per output channel and a fused activation. Subclasses add the weights
// and compute one output plane at a time; run() splits the output channels.
class GeneralConvBase : public Op {
 public:
  GeneralConvBase(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 2, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    g_ = read_geometry(s);
    check_geometry(s, g_, x, y);
    n_ = x.shape[0], ih_ = x.shape[1], iw_ = x.shape[2], ic_ = x.shape[3];
    oh_ = y.shape[1], ow_ = y.shape[2], oc_ = y.shape[3];
    bias_.assign(static_cast<size_t>(oc_), 0.0f);
    if (const Array* b = find_array(s, "bias")) {
      expect_array(s, *b, {oc_}, "bias");
      bias_ = b->data;
    }
    act_ = checked_activation(s);
    if (s.inputs.size() == 2) expect_residual(s, t, y);
  }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    const float* skip = inputs.size() == 2 ? (*ctx.tensors)[inputs[1]].data : nullptr;
    float lo, hi;
    activation_range(act_, &lo, &hi);
    const int64_t in_plane = ih_ * iw_, out_plane = oh_ * ow_;
    for (int64_t n = 0; n < n_; ++n) {
      const float* xi = x + n * ic_ * in_plane;
      float* yi = y + n * oc_ * out_plane;
      auto channels = [&](size_t ob, size_t oe) {
        for (size_t o = ob; o < oe; ++o) {
          float* out = yi + static_cast<int64_t>(o) * out_plane;
          std::fill(out, out + out_plane, bias_[o]);
          accumulate_plane(xi, static_cast<int64_t>(o), out);
          if (skip != nullptr) {  // a fused residual ADD, before the activation
            const float* r = skip + (n * oc_ + static_cast<int64_t>(o)) * out_plane;
            for (int64_t p = 0; p < out_plane; ++p) out[p] += r[p];
          }
          clamp_range(out, static_cast<size_t>(out_plane), lo, hi);
        }
      };
      if (flops() / n_ >= kParallelMinFlops) {
        ctx.pool->parallel_for(static_cast<size_t>(oc_), 1, channels);
      } else {
        channels(0, static_cast<size_t>(oc_));
      }
    }
  }

 protected:
  // out (one output plane, holding the bias) += the taps of output channel o.
  virtual void accumulate_plane(const float* image, int64_t o, float* out) const = 0;

  Geometry g_;
  int64_t n_, ih_, iw_, ic_, oh_, ow_, oc_;
  std::vector<float> weights_, bias_;
  int act_ = 0;
};

class ConvGeneralOp : public GeneralConvBase {
 public:
  ConvGeneralOp(const OpSpec& s, const std::vector<Tensor>& t) : GeneralConvBase(s, t) {
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {oc_, g_.kh, g_.kw, ic_}, "weights");
    weights_ = w.data;
  }
  const char* family() const override { return "conv_general"; }
  double flops() const override { return 2.0 * n_ * oh_ * ow_ * oc_ * g_.kh * g_.kw * ic_; }

 protected:
  void accumulate_plane(const float* image, int64_t o, float* out) const override {
    const int64_t in_plane = ih_ * iw_;
    for (int64_t ky = 0; ky < g_.kh; ++ky)
      for (int64_t kx = 0; kx < g_.kw; ++kx)
        for (int64_t c = 0; c < ic_; ++c) {
          float w = weights_[((o * g_.kh + ky) * g_.kw + kx) * ic_ + c];
          if (w != 0.0f) accumulate_tap(image + c * in_plane, ih_, iw_, out, oh_, ow_, g_, ky, kx, w);
        }
  }
};

// Depthwise: output channel o reads input channel o / multiplier.
class DepthwiseGeneralOp : public GeneralConvBase {
 public:
  DepthwiseGeneralOp(const OpSpec& s, const std::vector<Tensor>& t) : GeneralConvBase(s, t) {
    mult_ = get_int(s, "depth_multiplier", 1);
    expect_positive(s, mult_, "depth_multiplier", 1 << 16);
    if (ic_ * mult_ != oc_) {
      fail(s, std::to_string(ic_) + " input channels x depth_multiplier " + std::to_string(mult_) +
                  " != " + std::to_string(oc_) + " output channels");
    }
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {oc_, g_.kh, g_.kw}, "weights");
    weights_ = w.data;
  }
  const char* family() const override { return "dwconv_general"; }
  double flops() const override { return 2.0 * n_ * oh_ * ow_ * oc_ * g_.kh * g_.kw; }

 protected:
  void accumulate_plane(const float* image, int64_t o, float* out) const override {
    const float* in = image + (o / mult_) * ih_ * iw_;
    for (int64_t ky = 0; ky < g_.kh; ++ky)
      for (int64_t kx = 0; kx < g_.kw; ++kx) {
        float w = weights_[(o * g_.kh + ky) * g_.kw + kx];
        if (w != 0.0f) accumulate_tap(in, ih_, iw_, out, oh_, ow_, g_, ky, kx, w);
      }
  }

 private:
  int64_t mult_ = 1;
};

}  // namespace

std::unique_ptr<Op> make_conv_general(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<ConvGeneralOp>(s, t); }
std::unique_ptr<Op> make_depthwise_general(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<DepthwiseGeneralOp>(s, t); }

}  // namespace spruce
