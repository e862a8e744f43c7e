// int8 convolutions: 1x1 (dense or sparse weights, one kernel over 4-channel
// blocks), KxK (its windows gathered into the same tiles), depthwise.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/ops.h"
#include "ops/quantized_common.h"

namespace spruce {

namespace {

using kernels::kQS8Tile;

// A 1x1 conv reads tiles interleaved from its CHW input; a KxK conv gathers
// its windows into the tiles (rows = the window's values, ordered channel,
// kernel row, kernel column for a CHW input and kernel row, kernel column,
// channel (TFLite's weight order) for a row-major one; padding reads the input
// zero point, which stands for 0). Both then run the block kernel on every tile.
class QConvOp : public Op {
 public:
  QConvOp(const OpSpec& s, const std::vector<Tensor>& t, bool kxk) : kxk_(kxk) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    expect_layout(s, y, kCHW, "output");
    if (x.shape.size() != 4) fail(s, "input must be 4-D; received " + dims_str(x.shape));
    n_ = x.shape[0], in_h_ = x.shape[1], in_w_ = x.shape[2], in_c_ = x.shape[3];
    const int64_t out_c = y.shape[3];
    zp_ = zero_point(s, "input_zero_point");
    if (kxk) {
      in_chw_ = x.layout == kCHW;
      kh_ = get_int(s, "kernel_h"), kw_ = get_int(s, "kernel_w");
      sh_ = get_int(s, "stride_h"), sw_ = get_int(s, "stride_w");
      pt_ = get_int(s, "pad_top"), pl_ = get_int(s, "pad_left");
      const int64_t pb = get_int(s, "pad_bottom"), pr = get_int(s, "pad_right");
      for (auto [v, what] : {std::pair{kh_, "kernel_h"}, {kw_, "kernel_w"}, {sh_, "stride_h"}, {sw_, "stride_w"}}) {
        expect_positive(s, v, what, 64);
      }
      for (auto [v, what] : {std::pair{pt_, "pad_top"}, {pl_, "pad_left"}, {pb, "pad_bottom"}, {pr, "pad_right"}}) {
        expect_nonneg(s, v, what, 64);
      }
      out_h_ = conv_out_size(in_h_, kh_, sh_, 1, pt_, pb);
      out_w_ = conv_out_size(in_w_, kw_, sw_, 1, pl_, pr);
      if (out_h_ < 1 || out_w_ < 1) fail(s, "the window does not fit the padded input " + dims_str(x.shape));
    } else {
      expect_layout(s, x, kCHW, "input");
      out_h_ = in_h_, out_w_ = in_w_;
    }
    expect_shape(s, y, {n_, out_h_, out_w_, out_c}, "output");
    const int64_t cols = in_c_ * kh_ * kw_;
    if (cols > (1 << 20)) fail(s, "too many input values per output: " + std::to_string(cols));
    const std::vector<int8_t> w = int8_array(s, "weights", {out_c, cols});
    const std::vector<int32_t> bias = int32_bias(s, out_c);
    const std::vector<float> scale = requant_scales(s, out_c);
    w_ = kernels::pack_qs8_blocks(w.data(), static_cast<int32_t>(out_c), static_cast<int32_t>(cols), bias.data(),
                                  scale.data(), zp_, qs8_output(s));
    pixels_ = out_h_ * out_w_;
    tiles_ = (pixels_ + kQS8Tile - 1) / kQS8Tile;
    tile_bytes_ = kernels::qs8_tile_bytes(w_.cols);
    sparse_ = get_int(s, "sparse", 0) != 0;
    int64_t nonzero = 0;
    for (int8_t v : w) nonzero += v != 0;
    nonzero_ = nonzero;
  }

  const char* family() const override { return kxk_ ? "conv_s8" : sparse_ ? "spmm_s8" : "gemm_s8"; }
  double flops() const override { return 2.0 * static_cast<double>(nonzero_) * pixels_ * n_; }
  size_t scratch_floats() const override { return (tiles_ * tile_bytes_ + 3) / 4 + 16; }

  void run(const RunContext& ctx) const override {
    const Tensor& x = (*ctx.tensors)[inputs[0]];
    const Tensor& y = (*ctx.tensors)[outputs[0]];
    uint8_t* scratch = reinterpret_cast<uint8_t*>(ctx.scratch);
    const int64_t in_img = in_h_ * in_w_ * in_c_, out_img = pixels_ * w_.rows;
    for (int64_t n = 0; n < n_; ++n) {
      run_image(ctx.pool, scratch, x.s8() + n * in_img, y.s8() + n * out_img);
    }
  }

 private:
  void fill_tile(const int8_t* x, int64_t t, uint8_t* tile) const {
    const int64_t p = t * kQS8Tile, count = std::min<int64_t>(kQS8Tile, pixels_ - p);
    if (!kxk_) return kernels::qs8_interleave_tile(x, pixels_, w_.cols, p, count, tile, kernels::default_isa());
    // Each output pixel's window, as bytes + 128, then regrouped four at a time:
    // tile[b][q][j] = window value 4b + j of output pixel p + q.
    const int64_t row_bytes = static_cast<int64_t>(w_.blocks) * 4;
    // [count][row_bytes] and 16 bytes of slack; each pool thread keeps one, grown to the
    // largest tile it has filled.
    thread_local std::vector<uint8_t> window_buffer;
    if (window_buffer.size() < tile_bytes_ + 16) window_buffer.resize(tile_bytes_ + 16);
    uint8_t* windows = window_buffer.data();
    for (int64_t q = 0; q < count; ++q) {
      uint8_t* win = windows + q * row_bytes;
      const int64_t oy = (p + q) / out_w_, ox = (p + q) % out_w_;
      if (in_chw_) {
        for (int64_t c = 0, r = 0; c < in_c_; ++c) {
          for (int64_t ky = 0; ky < kh_; ++ky) {
            const int64_t iy = oy * sh_ + ky - pt_;
            for (int64_t kx = 0; kx < kw_; ++kx, ++r) {
              const int64_t ix = ox * sw_ + kx - pl_;
              const bool inside = iy >= 0 && iy < in_h_ && ix >= 0 && ix < in_w_;
              win[r] = static_cast<uint8_t>((inside ? x[(c * in_h_ + iy) * in_w_ + ix] : zp_) + 128);
            }
          }
        }
      } else {
        // Row-major input: a window row's kw pixels x C channels are contiguous,
        // copied at once where the row lies inside the image.
        const int64_t span = kw_ * in_c_;
        const int64_t ix0 = ox * sw_ - pl_;
        const bool inside_w = ix0 >= 0 && ix0 + kw_ <= in_w_;
        for (int64_t ky = 0; ky < kh_; ++ky) {
          uint8_t* dst = win + ky * span;
          const int64_t iy = oy * sh_ + ky - pt_;
          if (iy < 0 || iy >= in_h_) {
            std::memset(dst, zp_ + 128, static_cast<size_t>(span));
            continue;
          }
          const int8_t* src = x + (iy * in_w_) * in_c_;
          if (inside_w && span <= 16) {
            // A short window row (the 3x3 entry conv's 9 bytes) as one 16-byte copy: the
            // bytes past it land where the next row or pixel is written after, or in the
            // buffer's slack, and reading past the row stays within the arena's slack.
            uint8_t v[16];
            std::memcpy(v, src + ix0 * in_c_, 16);
            for (int i = 0; i < 16; ++i) v[i] ^= 0x80;
            std::memcpy(dst, v, 16);
            continue;
          }
          if (inside_w) {
            const int8_t* from = src + ix0 * in_c_;
            for (int64_t i = 0; i < span; ++i) dst[i] = static_cast<uint8_t>(from[i] + 128);
            continue;
          }
          for (int64_t kx = 0; kx < kw_; ++kx) {
            const int64_t ix = ix0 + kx;
            const bool inside = ix >= 0 && ix < in_w_;
            for (int64_t c = 0; c < in_c_; ++c) {
              dst[kx * in_c_ + c] = static_cast<uint8_t>((inside ? src[ix * in_c_ + c] : zp_) + 128);
            }
          }
        }
      }
      std::memset(win + w_.cols, 0, static_cast<size_t>(row_bytes - w_.cols));
    }
    for (int32_t b = 0; b < w_.blocks; ++b) {
      for (int64_t q = 0; q < count; ++q) {
        std::memcpy(tile + (static_cast<int64_t>(b) * kQS8Tile + q) * 4, windows + q * row_bytes + 4 * b, 4);
      }
    }
  }

  void run_tile(const uint8_t* tile, int64_t t, int32_t r0, int32_t r1, int8_t* y) const {
    const int64_t p = t * kQS8Tile, count = std::min<int64_t>(kQS8Tile, pixels_ - p);
    kernels::qs8_spmm_tile(w_, tile, count, r0, r1, y + p, pixels_, kernels::default_isa());
  }

  void run_image(ThreadPool* pool, uint8_t* scratch, const int8_t* x, int8_t* y) const {
    const int threads = pool->num_threads();
    const double work = flops() / static_cast<double>(n_);
    if (threads == 1 || work < kParallelMinFlops) {
      for (int64_t t = 0; t < tiles_; ++t) {
        uint8_t* tile = scratch + t * tile_bytes_;
        fill_tile(x, t, tile);
        run_tile(tile, t, 0, w_.rows, y);
      }
      return;
    }
    if (tiles_ >= 4 * threads) {
      // Enough tiles: each thread fills and runs whole tiles.
      pool->parallel_for(static_cast<size_t>(tiles_), 1, [&](size_t tb, size_t te) {
        for (size_t t = tb; t < te; ++t) {
          uint8_t* tile = scratch + t * tile_bytes_;
          fill_tile(x, static_cast<int64_t>(t), tile);
          run_tile(tile, static_cast<int64_t>(t), 0, w_.rows, y);
        }
      });
      return;
    }
    // Small images: fill every tile, then split the output channels.
    pool->parallel_for(static_cast<size_t>(tiles_), 1, [&](size_t tb, size_t te) {
      for (size_t t = tb; t < te; ++t) fill_tile(x, static_cast<int64_t>(t), scratch + t * tile_bytes_);
    });
    const size_t grain = std::max<size_t>(4, static_cast<size_t>(w_.rows) / static_cast<size_t>(4 * threads));
    pool->parallel_for(static_cast<size_t>(w_.rows), grain, [&](size_t rb, size_t re) {
      for (int64_t t = 0; t < tiles_; ++t) {
        run_tile(scratch + t * tile_bytes_, t, static_cast<int32_t>(rb), static_cast<int32_t>(re), y);
      }
    });
  }

  bool kxk_;
  bool in_chw_ = true;
  bool sparse_ = false;
  int64_t n_, in_h_, in_w_, in_c_;
  int64_t kh_ = 1, kw_ = 1, sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0;
  int64_t out_h_, out_w_, pixels_, tiles_;
  size_t tile_bytes_;
  int32_t zp_;
  int64_t nonzero_ = 0;
  kernels::QS8BlockMatrix w_;
};

class QDepthwiseOp : public Op {
 public:
  QDepthwiseOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_dtype(s, x, kInt8, "input");
    expect_dtype(s, y, kInt8, "output");
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    n_ = x.shape[0], c_ = x.shape[3];
    p_.in_h = static_cast<int32_t>(x.shape[1]);
    p_.in_w = static_cast<int32_t>(x.shape[2]);
    const int64_t kh = get_int(s, "kernel_h"), kw = get_int(s, "kernel_w");
    const int64_t sh = get_int(s, "stride_h"), sw = get_int(s, "stride_w");
    const int64_t pt = get_int(s, "pad_top"), pl = get_int(s, "pad_left");
    const int64_t pb = get_int(s, "pad_bottom"), pr = get_int(s, "pad_right");
    for (auto [v, what] : {std::pair{kh, "kernel_h"}, {kw, "kernel_w"}, {sh, "stride_h"}, {sw, "stride_w"}}) {
      expect_positive(s, v, what, 64);
    }
    for (auto [v, what] : {std::pair{pt, "pad_top"}, {pl, "pad_left"}, {pb, "pad_bottom"}, {pr, "pad_right"}}) {
      expect_nonneg(s, v, what, 64);
    }
    const int64_t oh = conv_out_size(p_.in_h, kh, sh, 1, pt, pb), ow = conv_out_size(p_.in_w, kw, sw, 1, pl, pr);
    if (oh < 1 || ow < 1) fail(s, "the window does not fit the padded input " + dims_str(x.shape));
    expect_shape(s, y, {n_, oh, ow, c_}, "output");
    p_.out_h = static_cast<int32_t>(oh), p_.out_w = static_cast<int32_t>(ow);
    p_.kernel_h = static_cast<int32_t>(kh), p_.kernel_w = static_cast<int32_t>(kw);
    p_.stride_h = static_cast<int32_t>(sh), p_.stride_w = static_cast<int32_t>(sw);
    p_.pad_top = static_cast<int32_t>(pt), p_.pad_left = static_cast<int32_t>(pl);
    p_.input_zero_point = zero_point(s, "input_zero_point");
    const std::vector<int8_t> w = int8_array(s, "weights", {c_, kh, kw});
    const std::vector<int32_t> bias = int32_bias(s, c_);
    const std::vector<float> scale = requant_scales(s, c_);
    w_ = kernels::pack_qs8_dw(p_, w.data(), static_cast<int32_t>(c_), bias.data(), scale.data());
    out_ = qs8_output(s);
  }

  const char* family() const override { return "dwconv_s8"; }
  double flops() const override {
    return 2.0 * static_cast<double>(n_ * c_) * p_.out_h * p_.out_w * p_.kernel_h * p_.kernel_w;
  }

  void run(const RunContext& ctx) const override {
    const Tensor& x = (*ctx.tensors)[inputs[0]];
    const Tensor& y = (*ctx.tensors)[outputs[0]];
    const int64_t in_img = c_ * p_.in_h * p_.in_w, out_img = c_ * p_.out_h * p_.out_w;
    const size_t scratch = kernels::qs8_dwconv_scratch(p_);
    for (int64_t n = 0; n < n_; ++n) {
      auto channels = [&](size_t cb, size_t ce) {
        // Each pool thread keeps one buffer for the padded planes, grown to the
        // largest layer it has run: no allocation once every layer has run.
        thread_local std::vector<int16_t> buffer;
        if (buffer.size() < scratch) buffer.resize(scratch);
        kernels::qs8_dwconv_chw(p_, w_, out_, x.s8() + n * in_img,
                                y.s8() + n * out_img, static_cast<int32_t>(cb), static_cast<int32_t>(ce),
                                buffer.data(), kernels::default_isa());
      };
      if (ctx.pool->num_threads() == 1 || flops() / static_cast<double>(n_) < kParallelMinFlops) {
        channels(0, static_cast<size_t>(c_));
      } else {
        ctx.pool->parallel_for(static_cast<size_t>(c_), 1, channels);
      }
    }
  }

 private:
  int64_t n_, c_;
  kernels::QS8DwParams p_;
  kernels::QS8DwWeights w_;
  kernels::QS8Output out_;
};

}  // namespace

std::unique_ptr<Op> make_qconv1x1(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QConvOp>(s, t, false);
}

std::unique_ptr<Op> make_qconv(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QConvOp>(s, t, true);
}

std::unique_ptr<Op> make_qdepthwise(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<QDepthwiseOp>(s, t);
}

}  // namespace spruce
