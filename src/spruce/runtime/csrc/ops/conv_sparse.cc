// Convolutions with sparse weights other than the 1x1 stride-1 ones (any
// kernel size, stride and padding; no dilation, groups 1), on channel-major
// activations: the input is copied into padded phase planes, then
// kernels::spconv multiplies the nonzeros (kernels/spconv.h). The loader sends
// a convolution here when its weights are sparse enough; dense ones run as
// im2col and the dense GEMM (conv_im2col.cc).
#include <algorithm>
#include <stdexcept>

#include "kernels/kernels.h"
#include "kernels/spconv.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

// With swish in its epilogue, a conv runs in pieces whose output (at most
// this many floats, 256 KiB) is still in cache when swish goes over it.
constexpr int64_t kSwishPieceFloats = 64 << 10;

class ConvSparseOp : public Op {
 public:
  ConvSparseOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    kernels::SpConvShape& p = shape_;
    const int64_t kh = get_int(s, "kernel_h"), kw = get_int(s, "kernel_w");
    const int64_t sh = get_int(s, "stride_h"), sw = get_int(s, "stride_w");
    expect_positive(s, kh, "kernel height", 1024);
    expect_positive(s, kw, "kernel width", 1024);
    expect_positive(s, sh, "stride", 1024);
    expect_positive(s, sw, "stride", 1024);
    const int64_t top = get_int(s, "pad_top"), left = get_int(s, "pad_left");
    const int64_t bottom = get_int(s, "pad_bottom"), right = get_int(s, "pad_right");
    for (int64_t v : {top, left, bottom, right}) expect_nonneg(s, v, "padding", 1 << 16);
    if (x.shape.size() != 4 || y.shape.size() != 4 || x.shape[0] != y.shape[0]) {
      fail(s, "input and output must be 4-D with one batch size: " + dims_str(x.shape) + " -> " + dims_str(y.shape));
    }
    for (int64_t d : {x.shape[1], x.shape[2], x.shape[3], y.shape[3]}) expect_positive(s, d, "dimension", 1 << 24);
    if (conv_out_size(x.shape[1], kh, sh, 1, top, bottom) != y.shape[1] ||
        conv_out_size(x.shape[2], kw, sw, 1, left, right) != y.shape[2]) {
      fail(s, "input " + dims_str(x.shape) + " does not give output " + dims_str(y.shape) +
                  " with this kernel, stride and padding");
    }
    batch_ = x.shape[0];
    p.in_h = static_cast<int32_t>(x.shape[1]), p.in_w = static_cast<int32_t>(x.shape[2]);
    p.in_c = static_cast<int32_t>(x.shape[3]), p.out_c = static_cast<int32_t>(y.shape[3]);
    p.kernel_h = static_cast<int32_t>(kh), p.kernel_w = static_cast<int32_t>(kw);
    p.stride_h = static_cast<int32_t>(sh), p.stride_w = static_cast<int32_t>(sw);
    p.pad_top = static_cast<int32_t>(top), p.pad_left = static_cast<int32_t>(left);
    p.pad_bottom = static_cast<int32_t>(bottom), p.pad_right = static_cast<int32_t>(right);
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {p.out_c, kh, kw, p.in_c}, "weights");
    try {
      packed_ = kernels::pack_spconv(w.data.data(), p);
    } catch (const std::invalid_argument& e) {
      fail(s, e.what());
    }
    bias_ = bias_or_zeros(s, p.out_c);
    const int act = checked_epilogue_activation(s);
    act_ = kernel_activation(act);
    swish_ = act == kActSwishEpilogue;
    in_img_ = x.numel / static_cast<size_t>(batch_);
    out_img_ = y.numel / static_cast<size_t>(batch_);
  }
  const char* family() const override { return "spconv"; }
  double flops() const override {
    return 2.0 * batch_ * shape_.out_h() * shape_.out_w() * static_cast<double>(packed_.nnz());
  }
  size_t scratch_floats() const override { return static_cast<size_t>(packed_.packed_floats()); }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    const int threads = ctx.pool->num_threads();
    const bool parallel = threads > 1 && flops() / batch_ >= kParallelMinFlops;
    const int32_t oh = shape_.out_h(), ow = shape_.out_w(), oc = shape_.out_c, ic = shape_.in_c;
    const int64_t in_plane = static_cast<int64_t>(shape_.in_h) * shape_.in_w;
    const int64_t out_plane = static_cast<int64_t>(oh) * ow;
    for (int64_t n = 0; n < batch_; ++n) {
      const float* xi = x + n * in_img_;
      float* yi = y + n * out_img_;
      auto pack = [&](size_t b, size_t e) {
        kernels::spconv_pack_input(packed_, xi, in_plane, ctx.scratch, static_cast<int32_t>(b),
                                   static_cast<int32_t>(e));
      };
      auto multiply = [&](int32_t nb, int32_t ne, int32_t rb, int32_t re) {
        if (!swish_) {
          kernels::spconv(packed_, bias_.data(), ctx.scratch, yi, out_plane, nb, ne, rb, re, act_);
          return;
        }
        const int32_t piece = static_cast<int32_t>(
            std::max<int64_t>(1, kSwishPieceFloats / (static_cast<int64_t>(ne - nb) * ow)));
        for (int32_t r = rb; r < re; r += piece) {
          const int32_t r1 = std::min(re, r + piece);
          kernels::spconv(packed_, bias_.data(), ctx.scratch, yi, out_plane, nb, ne, r, r1, act_);
          kernels::swish_rows(yi, out_plane, nb, ne, static_cast<int64_t>(r) * ow, static_cast<int64_t>(r1) * ow);
        }
      };
      if (!parallel) {
        pack(0, static_cast<size_t>(ic));
        multiply(0, oc, 0, oh);
        continue;
      }
      ctx.pool->parallel_for(static_cast<size_t>(ic), 1, pack);
      // Row tiles when every thread gets a few; else output channels, one
      // chunk per thread, so each reads only its channels' weights.
      const int32_t tiles = (oh + packed_.tile_rows - 1) / packed_.tile_rows;
      if (tiles >= 4 * threads) {
        ctx.pool->parallel_for(static_cast<size_t>(oh), static_cast<size_t>(packed_.tile_rows), [&](size_t b, size_t e) {
          multiply(0, oc, static_cast<int32_t>(b), static_cast<int32_t>(e));
        });
      } else {
        const size_t chunk = static_cast<size_t>((oc + threads - 1) / threads);
        ctx.pool->parallel_for(static_cast<size_t>(oc), chunk, [&](size_t b, size_t e) {
          multiply(static_cast<int32_t>(b), static_cast<int32_t>(e), 0, oh);
        });
      }
    }
  }

 private:
  kernels::SpConvShape shape_;
  kernels::SparseConv packed_;
  std::vector<float> bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each piece of output (kActSwishEpilogue)
  int64_t batch_ = 1;
  size_t in_img_ = 0, out_img_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_conv_sparse(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<ConvSparseOp>(s, t);
}

}  // namespace spruce
