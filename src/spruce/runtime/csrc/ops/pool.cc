// MAX_POOL_2D and AVERAGE_POOL_2D on channel-major activations: one window per
// output pixel, any size, stride and padding. Padding never enters a window:
// max pooling ignores it and average pooling divides by the pixels the window
// covers, as TFLite does.
#include <algorithm>
#include <vector>

#include "ops/common.h"
#include "ops/ops.h"
#include "ops/window.h"

namespace spruce {

namespace {

class Pool2DOp : public Op {
 public:
  Pool2DOp(const OpSpec& s, const std::vector<Tensor>& t, bool max) : max_(max) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    const Window2D win = read_window2d(s, 1024);
    kh_ = win.kh, kw_ = win.kw, sh_ = win.sh, sw_ = win.sw, top_ = win.top, left_ = win.left;
    // A window lying wholly in the padding would have no pixels to pool.
    if (win.top >= kh_ || win.bottom >= kh_ || win.left >= kw_ || win.right >= kw_) {
      fail(s, "padding must be smaller than the window on each side. Received: window " + std::to_string(kh_) +
                  "x" + std::to_string(kw_) + ", padding " + dims_str({win.top, win.bottom, win.left, win.right}));
    }
    n_ = x.shape[0], c_ = x.shape[3], ih_ = x.shape[1], iw_ = x.shape[2];
    oh_ = y.shape[1], ow_ = y.shape[2];
    expect_window_output(s, win, x, y);
    if (y.shape[3] != c_) fail(s, "pooling keeps the channels: " + dims_str(x.shape) + " -> " + dims_str(y.shape));
    act_ = checked_activation(s);
  }
  const char* family() const override { return "pooling"; }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    float lo, hi;
    activation_range(act_, &lo, &hi);
    const int64_t in_plane = ih_ * iw_, out_plane = oh_ * ow_;
    auto planes = [&](size_t b, size_t e) {
      std::vector<float> rows(max_ ? static_cast<size_t>(iw_) : 0);
      for (size_t p = b; p < e; ++p) {
        float* out = y + static_cast<int64_t>(p) * out_plane;
        if (max_) max_plane(x + static_cast<int64_t>(p) * in_plane, out, rows.data());
        else average_plane(x + static_cast<int64_t>(p) * in_plane, out);
        clamp_range(out, static_cast<size_t>(out_plane), lo, hi);
      }
    };
    const size_t total = static_cast<size_t>(n_ * c_);
    if (static_cast<double>(out_plane) * kh_ * kw_ * c_ >= kParallelMinFlops) ctx.pool->parallel_for(total, 1, planes);
    else planes(0, total);
  }

 private:
  // One output plane of a max pool: the window's input rows are first combined
  // into one row (whole rows at once, which the compiler vectorises), so each
  // output then takes the max of kw values instead of kh * kw. A max does not
  // depend on the order it is taken in, so the result is the same.
  void max_plane(const float* in, float* out, float* rows) const {
    for (int64_t oy = 0; oy < oh_; ++oy) {
      const int64_t y0 = std::max<int64_t>(oy * sh_ - top_, 0);
      const int64_t y1 = std::min(oy * sh_ - top_ + kh_, ih_);  // > y0: padding < window
      std::copy(in + y0 * iw_, in + (y0 + 1) * iw_, rows);
      for (int64_t iy = y0 + 1; iy < y1; ++iy) {
        const float* row = in + iy * iw_;
        for (int64_t ix = 0; ix < iw_; ++ix) rows[ix] = std::max(rows[ix], row[ix]);
      }
      float* orow = out + oy * ow_;
      for (int64_t ox = 0; ox < ow_; ++ox) {
        const int64_t x0 = std::max<int64_t>(ox * sw_ - left_, 0);
        const int64_t x1 = std::min(ox * sw_ - left_ + kw_, iw_);
        float acc = rows[x0];
        for (int64_t ix = x0 + 1; ix < x1; ++ix) acc = std::max(acc, rows[ix]);
        orow[ox] = acc;
      }
    }
  }

  // One output plane of an average pool, summed row by row over each window.
  void average_plane(const float* in, float* out) const {
    for (int64_t oy = 0; oy < oh_; ++oy) {
      const int64_t y0 = std::max<int64_t>(oy * sh_ - top_, 0);
      const int64_t y1 = std::min(oy * sh_ - top_ + kh_, ih_);
      float* orow = out + oy * ow_;
      for (int64_t ox = 0; ox < ow_; ++ox) {
        const int64_t x0 = std::max<int64_t>(ox * sw_ - left_, 0);
        const int64_t x1 = std::min(ox * sw_ - left_ + kw_, iw_);
        float acc = 0.0f;
        for (int64_t iy = y0; iy < y1; ++iy) {
          const float* row = in + iy * iw_;
          for (int64_t ix = x0; ix < x1; ++ix) acc += row[ix];
        }
        orow[ox] = acc / static_cast<float>((y1 - y0) * (x1 - x0));
      }
    }
  }

  bool max_;
  int64_t kh_, kw_, sh_, sw_, top_, left_;
  int64_t n_, c_, ih_, iw_, oh_, ow_;
  int act_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_pool2d(const OpSpec& s, const std::vector<Tensor>& t, bool max) {
  return std::make_unique<Pool2DOp>(s, t, max);
}

}  // namespace spruce
