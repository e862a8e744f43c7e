// Convolutions that run on the hot kernels of kernels.h: the entry conv (HWC
// input -> CHW output), 1x1 convs (sparse or dense weights), and depthwise
// convs, all on channel-major activations. Work is split across the pool by
// pixels when an image is large and by channels when it is small.
#include <algorithm>
#include <cstdint>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

// With swish in its epilogue, a conv runs in pieces whose output (at most
// this many floats, 256 KiB) is still in cache when swish goes over it.
constexpr int64_t kSwishPieceFloats = 64 << 10;

struct Window {
  int64_t kernel, stride, top, left, bottom, right;
};

Window read_window(const OpSpec& s) {
  Window w{get_int(s, "kernel"), get_int(s, "stride"), get_int(s, "pad_top"), get_int(s, "pad_left"),
           get_int(s, "pad_bottom"), get_int(s, "pad_right")};
  expect_positive(s, w.kernel, "kernel", 64);
  expect_positive(s, w.stride, "stride", 64);
  for (int64_t p : {w.top, w.left, w.bottom, w.right}) expect_nonneg(s, p, "padding", 4096);
  return w;
}

void expect_window_output(const OpSpec& s, const Window& w, int64_t in_h, int64_t in_w, int64_t out_h,
                          int64_t out_w) {
  int64_t oh = conv_out_size(in_h, w.kernel, w.stride, 1, w.top, w.bottom);
  int64_t ow = conv_out_size(in_w, w.kernel, w.stride, 1, w.left, w.right);
  if (oh != out_h || ow != out_w) {
    fail(s, "a " + std::to_string(w.kernel) + "x" + std::to_string(w.kernel) + " window with stride " +
                std::to_string(w.stride) + " over " + std::to_string(in_h) + "x" + std::to_string(in_w) +
                " gives " + std::to_string(oh) + "x" + std::to_string(ow) + ", not " + std::to_string(out_h) +
                "x" + std::to_string(out_w));
  }
}

class ConvEntryOp : public Op {
 public:
  ConvEntryOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kNative, "input");
    expect_layout(s, y, kCHW, "output");
    if (x.shape.size() != 4 || x.shape[0] != y.shape[0]) fail(s, "input must be 4-D with the output's batch");
    Window w = read_window(s);
    expect_window_output(s, w, x.shape[1], x.shape[2], y.shape[1], y.shape[2]);
    batch_ = x.shape[0];
    p_.in_h = static_cast<int32_t>(x.shape[1]);
    p_.in_w = static_cast<int32_t>(x.shape[2]);
    p_.in_c = static_cast<int32_t>(x.shape[3]);
    p_.out_c = static_cast<int32_t>(y.shape[3]);
    p_.kernel = static_cast<int32_t>(w.kernel);
    p_.stride = static_cast<int32_t>(w.stride);
    p_.pad_top = static_cast<int32_t>(w.top), p_.pad_left = static_cast<int32_t>(w.left);
    p_.pad_bottom = static_cast<int32_t>(w.bottom), p_.pad_right = static_cast<int32_t>(w.right);
    const Array& wt = get_array(s, "weights");
    expect_array(s, wt, {p_.out_c, w.kernel, w.kernel, p_.in_c}, "weights");
    packed_ = kernels::pack_conv_hwc2chw(wt.data.data(), p_.out_c, p_.kernel, p_.in_c);
    bias_ = bias_or_zeros(s, p_.out_c);
    const int act = checked_epilogue_activation(s);
    act_ = kernel_activation(act);
    swish_ = act == kActSwishEpilogue;
    in_img_ = x.numel / static_cast<size_t>(batch_);
    out_img_ = y.numel / static_cast<size_t>(batch_);
  }
  const char* family() const override { return "conv_hwc2chw"; }
  double flops() const override {
    return 2.0 * batch_ * p_.out_h() * p_.out_w() * p_.out_c * p_.kernel * p_.kernel * p_.in_c;
  }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    for (int64_t n = 0; n < batch_; ++n) {
      const float* xi = x + n * in_img_;
      float* yi = y + n * out_img_;
      auto rows = [&](size_t b, size_t e) {
        if (!swish_) {
          kernels::conv_hwc2chw(p_, packed_, bias_.data(), xi, yi, static_cast<int32_t>(b),
                                static_cast<int32_t>(e), act_);
          return;
        }
        const int64_t ow = p_.out_w(), plane = static_cast<int64_t>(p_.out_h()) * ow;
        const size_t piece = static_cast<size_t>(std::max<int64_t>(1, kSwishPieceFloats / (p_.out_c * ow)));
        for (size_t r = b; r < e; r += piece) {
          const size_t re = std::min(e, r + piece);
          kernels::conv_hwc2chw(p_, packed_, bias_.data(), xi, yi, static_cast<int32_t>(r),
                                static_cast<int32_t>(re), act_);
          kernels::swish_rows(yi, plane, 0, p_.out_c, static_cast<int64_t>(r) * ow, static_cast<int64_t>(re) * ow);
        }
      };
      if (flops() / batch_ >= kParallelMinFlops) {
        ctx.pool->parallel_for(static_cast<size_t>(p_.out_h()), 1, rows);
      } else {
        rows(0, static_cast<size_t>(p_.out_h()));
      }
    }
  }

 private:
  kernels::ConvHwcParams p_;
  kernels::PackedConvHwc packed_;
  std::vector<float> bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each piece of output (kActSwishEpilogue)
  int64_t batch_ = 1;
  size_t in_img_ = 0, out_img_ = 0;
};

// Splits rows x pixels of one image across the pool: by pixels (32 at a time)
// when every thread gets at least `min_pixels`, else by rows; not at all when
// the layer's `flops` are too few to pay for the threads.
template <typename F>
void split_rows_pixels(ThreadPool* pool, double flops, int64_t rows, int64_t pixels, int64_t row_grain,
                       int64_t min_pixels, F&& f) {
  const int threads = pool->num_threads();
  if (threads == 1 || flops < kParallelMinFlops) {
    f(0, rows, 0, pixels);
  } else if (pixels >= min_pixels * threads) {
    pool->parallel_for(static_cast<size_t>(pixels), 32, [&](size_t b, size_t e) {
      f(0, rows, static_cast<int64_t>(b), static_cast<int64_t>(e));
    });
  } else {
    pool->parallel_for(static_cast<size_t>(rows), static_cast<size_t>(row_grain), [&](size_t b, size_t e) {
      f(static_cast<int64_t>(b), static_cast<int64_t>(e), 0, pixels);
    });
  }
}

class Conv1x1Op : public Op {
 public:
  Conv1x1Op(const OpSpec& s, const std::vector<Tensor>& t, bool sparse) : sparse_(sparse) {
    // More inputs: the sparse kernel's per-input-channel scale (a fused MUL,
    // "input_scale") second, then a residual (a fused ADD) last.
    expect_arity(s, 1, 3, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    if (x.shape[0] != y.shape[0] || x.shape[1] != y.shape[1] || x.shape[2] != y.shape[2]) {
      fail(s, "a 1x1 conv keeps batch, height and width: " + dims_str(x.shape) + " -> " + dims_str(y.shape));
    }
    batch_ = x.shape[0];
    pixels_ = x.shape[1] * x.shape[2];
    in_stride_ = out_stride_ = pixels_;
    k_ = x.shape[3];
    n_ = y.shape[3];
    if (k_ > (1 << 24) || n_ > (1 << 24)) fail(s, "too many channels");
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {n_, k_}, "weights");
    if (sparse_) {
      if (k_ * pixels_ * static_cast<int64_t>(sizeof(float)) >= (int64_t{1} << 31)) {
        fail(s, "input too large for 32-bit sparse offsets: " + dims_str(x.shape));
      }
      // The kernel may want the input copied into aligned tiles (kernels.h).
      tile_ = kernels::spmm_input_tile(static_cast<int32_t>(k_), pixels_);
      if (tile_ != 0) tiles_ = (pixels_ + tile_ - 1) / tile_;
      sparse_w_ = kernels::pack_sparse(w.data.data(), static_cast<int32_t>(n_), static_cast<int32_t>(k_),
                                       tile_ != 0 ? tile_ : pixels_);
      nnz_ = sparse_w_.nnz();
    } else {
      dense_w_ = kernels::pack_dense(w.data.data(), static_cast<int32_t>(n_), static_cast<int32_t>(k_));
      nnz_ = n_ * k_;
    }
    bias_ = bias_or_zeros(s, n_);
    const int act = checked_epilogue_activation(s);
    act_ = kernel_activation(act);
    swish_ = act == kActSwishEpilogue;
    const int64_t input_scale = get_int(s, "input_scale", 0);
    if (input_scale != 0 && input_scale != 1) {
      fail(s, "input_scale must be 0 or 1. Received: input_scale=" + std::to_string(input_scale));
    }
    scaled_ = input_scale == 1;
    if (scaled_) {
      if (!sparse_) fail(s, "input_scale needs sparse weights; run the MUL as its own operator");
      if (s.inputs.size() < 2) fail(s, "input_scale needs the scale as a second input");
      // [N, 1, 1, K]: the same memory in either layout.
      expect_shape(s, in_t(s, t, 1), {batch_, 1, 1, k_}, "the input scale");
      base_values_ = sparse_w_.values;
      base_values_.insert(base_values_.end(), sparse_w_.group_values.begin(), sparse_w_.group_values.end());
      value_cols_ = kernels::spmm_value_columns(sparse_w_);
    }
    const size_t residual_at = scaled_ ? 2 : 1;
    if (s.inputs.size() > residual_at + 1) {
      fail(s, "received " + std::to_string(s.inputs.size()) + " inputs; a 1x1 conv takes its input, the scale when "
              "input_scale=1, and one residual");
    }
    residual_ = s.inputs.size() == residual_at + 1;
    if (residual_) expect_residual(s, t, y, residual_at);
  }
  // "spmm_groups": the sparse kernel runs rows in groups sharing one pattern
  // (block-pruned output channels, kernels.h SparseMatrix::group_rows).
  const char* family() const override {
    if (!sparse_) return "gemm";
    return sparse_w_.group_rows != 0 && kernels::default_isa() >= kernels::Isa::kAvx2 ? "spmm_groups" : "spmm";
  }
  double flops() const override { return 2.0 * batch_ * pixels_ * static_cast<double>(nnz_); }
  size_t scratch_floats() const override { return scaled_values_at() + (scaled_ ? base_values_.size() : 0); }
  // Planes padded to whole vectors let the tiles be read in place.
  // One tile is the whole plane padded (to whole vectors of the ISA).
  int64_t wanted_input_plane_stride() const override {
    const int64_t stride = tiles_ == 1 ? tile_ : kernels::whole_vectors(pixels_);
    const bool fits = k_ * stride * static_cast<int64_t>(sizeof(float)) <= INT32_MAX;  // byte offsets
    return tiles_ != 0 && stride != pixels_ && fits ? stride : 0;
  }
  void set_input_plane_stride(int64_t stride) override {
    kernels::set_in_stride(sparse_w_, stride);
    in_stride_ = stride;
    in_place_ = true;
  }
  // Planes padded to whole vectors let the tiles store their last vector whole.
  int64_t wanted_output_plane_stride() const override {
    return sparse_ && tiles_ != 0 && pixels_ % 8 != 0 ? kernels::whole_vectors(pixels_) : 0;
  }
  bool set_output_plane_stride(int64_t stride) override {
    if (!sparse_ || tiles_ == 0 || stride < pixels_) return false;
    out_stride_ = stride;
    // Tiles start at multiples of 8 pixels, so the last one's vectors end at
    // whole_vectors(pixels_).
    output_padded_ = stride >= kernels::whole_vectors(pixels_);
    return true;
  }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    const Tensor* skip = residual_ ? &(*ctx.tensors)[inputs.back()] : nullptr;
    // The residual's planes may be padded apart from the output's (pad_planes).
    const int64_t skip_stride = skip != nullptr && skip->plane_stride > 0 ? skip->plane_stride : pixels_;
    const float* scale = scaled_ ? (*ctx.tensors)[inputs[1]].data : nullptr;
    float* scaled_values = scaled_ ? ctx.scratch + scaled_values_at() : nullptr;
    // Sparse rows split at multiples of kSpmmGroupRows: row groups stay whole.
    const int64_t grain = sparse_ ? kernels::kSpmmGroupRows : std::max<int32_t>(dense_w_.panel, 1);
    for (int64_t b = 0; b < batch_; ++b) {
      const float* xi = x + b * k_ * in_stride_;
      float* yi = y + b * n_ * out_stride_;
      Values v;
      if (skip != nullptr) v.residual = {skip->data + b * n_ * skip_stride, skip_stride};
      if (scaled_) {
        // A few thousand weights, scaled once before the threads split the work.
        kernels::spmm_scale_values(base_values_.data(), value_cols_.data(), scale + b * k_, scaled_values,
                                   static_cast<int64_t>(base_values_.size()));
        v.values = scaled_values;
        v.group_values = scaled_values + sparse_w_.nnz();
      }
      if (tiles_ != 0) {
        run_tiled(ctx.pool, ctx.scratch, xi, yi, v);
        continue;
      }
      // The dense kernel splits by rows below 256 pixels a thread (14x14, 7x7),
      // where pixel chunks of 32 would share the pixels out unevenly.
      const int64_t min_pixels = sparse_ ? 64 : 256;
      auto multiply = [&](int64_t nb, int64_t ne, int64_t pb, int64_t pe) {
        if (sparse_) {
          kernels::spmm(sparse_w_, bias_.data(), xi, yi, pixels_, static_cast<int32_t>(nb),
                        static_cast<int32_t>(ne), pb, pe, act_, kernels::default_isa(), false, false, v.values,
                        v.group_values, v.residual.data, v.residual.stride);
        } else {
          kernels::gemm(dense_w_, bias_.data(), xi, pixels_, yi, pixels_, static_cast<int32_t>(nb),
                        static_cast<int32_t>(ne), pb, pe, act_, v.residual.data);
        }
      };
      split_rows_pixels(ctx.pool, flops() / batch_, n_, pixels_, grain, min_pixels, [&](int64_t nb, int64_t ne, int64_t pb, int64_t pe) {
        if (!swish_) return multiply(nb, ne, pb, pe);
        // Pixel pieces of whole 64-pixel tiles, their output rows in cache.
        const int64_t piece = std::max<int64_t>(64, kSwishPieceFloats / std::max<int64_t>(ne - nb, 1) / 64 * 64);
        for (int64_t p = pb; p < pe; p += piece) {
          const int64_t q = std::min(pe, p + piece);
          multiply(nb, ne, p, q);
          kernels::swish_rows(yi, pixels_, nb, ne, p, q);
        }
      });
    }
  }

 private:
  // The weights spmm multiplies by (null for the matrix's own), and the
  // image's residual to add (null for none).
  struct Values {
    const float* values = nullptr;
    const float* group_values = nullptr;
    struct {
      const float* data = nullptr;
      int64_t stride = 0;
    } residual;
  };
  // Scratch: the copied tiles, then the scaled weights (16-float aligned).
  size_t scaled_values_at() const {
    return in_place_ ? 0 : static_cast<size_t>((tiles_ * k_ * tile_ + 15) / 16 * 16);
  }
  // Tile t of the image, copied to scratch as [K][tile_] (rows tile_ floats
  // apart); a short last tile is zero-filled to whole vectors, so the kernel
  // loads it without masks.
  const float* pack_tile(float* scratch, const float* xi, int64_t t) const {
    if (in_place_) return xi;
    const int64_t p0 = t * tile_, width = std::min(tile_, pixels_ - p0);
    const int64_t padded = std::min(tile_, kernels::whole_vectors(width));
    float* dst = scratch + t * k_ * tile_;
    for (int64_t k = 0; k < k_; ++k) {
      std::copy_n(xi + k * pixels_ + p0, width, dst + k * tile_);
      std::fill(dst + k * tile_ + width, dst + k * tile_ + padded, 0.0f);
    }
    return dst;
  }
  // Tile t from its packed copy, or in place from padded planes (both
  // readable to whole vectors).
  void run_tile(const float* packed, float* yi, int64_t t, int64_t n0, int64_t n1, const Values& v) const {
    const int64_t p0 = t * tile_, width = std::min(tile_, pixels_ - p0);
    const int64_t q0 = in_place_ ? p0 : 0;
    kernels::spmm(sparse_w_, bias_.data(), packed, yi + p0 - q0, out_stride_, static_cast<int32_t>(n0),
                  static_cast<int32_t>(n1), q0, q0 + width, act_, kernels::default_isa(), /*input_padded=*/true,
                  output_padded_, v.values, v.group_values,
                  v.residual.data != nullptr ? v.residual.data + p0 - q0 : nullptr, v.residual.stride);
    if (swish_) kernels::swish_rows(yi, out_stride_, n0, n1, p0, p0 + width);
  }
  // Threads split tiles (each packing its own) when there are enough to balance;
  // otherwise every tile is packed first (unless read in place) and threads take
  // chunks of output channels through all tiles, so each reads only its rows'
  // weights, once per tile, from its own cache (the 5 tiles of a 14x14 image on
  // 2 threads), where (tile, channel group) items would make every thread
  // stream all the weights.
  void run_tiled(ThreadPool* pool, float* scratch, const float* xi, float* yi, const Values& v) const {
    const int threads = pool->num_threads();
    if (threads == 1 || flops() / batch_ < kParallelMinFlops) {
      for (int64_t t = 0; t < tiles_; ++t) run_tile(pack_tile(scratch, xi, t), yi, t, 0, n_, v);
      return;
    }
    if (tiles_ % threads == 0 || tiles_ >= 4 * threads) {
      pool->parallel_for(static_cast<size_t>(tiles_), 1, [&](size_t tb, size_t te) {
        for (size_t t = tb; t < te; ++t) run_tile(pack_tile(scratch, xi, t), yi, t, 0, n_, v);
      });
      return;
    }
    if (!in_place_) {
      pool->parallel_for(static_cast<size_t>(tiles_), 1, [&](size_t tb, size_t te) {
        for (size_t t = tb; t < te; ++t) pack_tile(scratch, xi, t);
      });
    }
    // One chunk of rows per thread: each run_tile call reuses a k-block's input
    // slice (in L1) over all its rows, where smaller chunks would reload every
    // slice once per chunk.
    const size_t rows = static_cast<size_t>(kernels::whole_vectors((n_ + threads - 1) / threads));
    pool->parallel_for(static_cast<size_t>(n_), rows, [&](size_t nb, size_t ne) {
      for (int64_t t = 0; t < tiles_; ++t) {
        run_tile(in_place_ ? xi : scratch + t * k_ * tile_, yi, t, static_cast<int64_t>(nb), static_cast<int64_t>(ne),
                 v);
      }
    });
  }

  bool sparse_;
  int64_t tile_ = 0, tiles_ = 0;  // pixels per input tile and tile count; 0: one range
  bool in_place_ = false;         // tiles read from padded input planes, not packed
  int64_t in_stride_ = 0;         // floats between input planes
  int64_t out_stride_ = 0;        // floats between output planes
  bool output_padded_ = false;    // output planes padded to whole vectors
  kernels::SparseMatrix sparse_w_;
  kernels::PackedDense dense_w_;
  std::vector<float> bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each piece of output (kActSwishEpilogue)
  bool residual_ = false;  // the last input is added before the activation (a fused ADD)
  // input_scale: the weights are multiplied by the second input's factor of
  // their input channel at each run (base_values_: values then group values;
  // value_cols_: their channels).
  bool scaled_ = false;
  std::vector<float> base_values_;
  std::vector<int32_t> value_cols_;
  int64_t batch_ = 1, pixels_ = 0, k_ = 0, n_ = 0, nnz_ = 0;
};

class DepthwiseOp : public Op {
 public:
  DepthwiseOp(const OpSpec& s, const std::vector<Tensor>& t) {
    // A second output: the mean of each output plane (a MEAN over H and W fused
    // into the conv, a squeeze-and-excite block's squeeze).
    if (s.outputs.size() == 2) {
      expect_arity(s, 1, 1, 2);
    } else {
      expect_arity(s, 1, 1, 1);
    }
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    if (x.shape[0] != y.shape[0] || x.shape[3] != y.shape[3]) {
      fail(s, "a depthwise conv keeps batch and channels: " + dims_str(x.shape) + " -> " + dims_str(y.shape));
    }
    Window w = read_window(s);
    expect_window_output(s, w, x.shape[1], x.shape[2], y.shape[1], y.shape[2]);
    batch_ = x.shape[0];
    c_ = x.shape[3];
    p_.in_h = static_cast<int32_t>(x.shape[1]);
    p_.in_w = static_cast<int32_t>(x.shape[2]);
    p_.kernel = static_cast<int32_t>(w.kernel);
    p_.stride = static_cast<int32_t>(w.stride);
    p_.pad_top = static_cast<int32_t>(w.top), p_.pad_left = static_cast<int32_t>(w.left);
    p_.pad_bottom = static_cast<int32_t>(w.bottom), p_.pad_right = static_cast<int32_t>(w.right);
    const Array& wt = get_array(s, "weights");
    expect_array(s, wt, {c_, w.kernel, w.kernel}, "weights");
    weights_ = wt.data;
    bias_ = bias_or_zeros(s, c_);
    const int act = checked_epilogue_activation(s);
    act_ = kernel_activation(act);
    swish_ = act == kActSwishEpilogue;
    in_img_ = x.numel / static_cast<size_t>(batch_);
    out_img_ = y.numel / static_cast<size_t>(batch_);
    means_ = expect_mean_output(s, t, batch_, c_);
  }
  const char* family() const override { return "dwconv_chw"; }
  double flops() const override {
    return 2.0 * batch_ * c_ * p_.out_h() * p_.out_w() * p_.kernel * p_.kernel;
  }
  bool set_output_plane_stride(int64_t stride) override {
    if (stride < static_cast<int64_t>(p_.out_h()) * p_.out_w()) return false;
    p_.out_stride = stride;
    out_img_ = static_cast<size_t>(c_ * stride);
    return true;
  }
  bool accepts_input_plane_stride(int64_t stride) const override {
    return stride >= static_cast<int64_t>(p_.in_h) * p_.in_w;
  }
  void set_input_plane_stride(int64_t stride) override {
    p_.in_stride = stride;
    in_img_ = static_cast<size_t>(c_ * stride);
  }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    float* means = means_ ? (*ctx.tensors)[outputs[1]].data : nullptr;
    for (int64_t n = 0; n < batch_; ++n) {
      const float* xi = x + n * in_img_;
      float* yi = y + n * out_img_;
      auto body = [&](size_t b, size_t e) {
        if (!swish_ && !means_) {
          kernels::dwconv_chw(p_, weights_.data(), bias_.data(), xi, yi, static_cast<int32_t>(b),
                              static_cast<int32_t>(e), act_);
          return;
        }
        // Swish and the means go over pieces of output still in cache; the mean
        // kernel is MEAN's, so the means are its bits.
        const int64_t pixels = static_cast<int64_t>(p_.out_h()) * p_.out_w();
        const size_t piece = static_cast<size_t>(std::max<int64_t>(1, kSwishPieceFloats / p_.out_plane()));
        for (size_t c = b; c < e; c += piece) {
          const size_t ce = std::min(e, c + piece);
          const int32_t c0 = static_cast<int32_t>(c), c1 = static_cast<int32_t>(ce);
          // Swish in the kernel's epilogue where it has one, else over the piece just written.
          if (!swish_ || !kernels::dwconv_chw_swish(p_, weights_.data(), bias_.data(), xi, yi, c0, c1, act_)) {
            kernels::dwconv_chw(p_, weights_.data(), bias_.data(), xi, yi, c0, c1, act_);
            if (swish_) kernels::swish_rows(yi, p_.out_plane(), c0, c1, 0, pixels);
          }
          if (means_) {
            kernels::global_avg_pool_chw(yi, pixels, p_.out_plane(), means + n * c_, static_cast<int32_t>(c),
                                         static_cast<int32_t>(ce));
          }
        }
      };
      if (flops() / batch_ >= kParallelMinFlops) ctx.pool->parallel_for(static_cast<size_t>(c_), 1, body);
      else body(0, static_cast<size_t>(c_));
    }
  }

 private:
  kernels::DwConvParams p_;
  std::vector<float> weights_, bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each piece of output (kActSwishEpilogue)
  bool means_ = false;  // the planes' means to outputs[1]
  int64_t batch_ = 1, c_ = 0;
  size_t in_img_ = 0, out_img_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_conv_entry(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<ConvEntryOp>(s, t); }
std::unique_ptr<Op> make_conv1x1(const OpSpec& s, const std::vector<Tensor>& t, bool sparse) {
  return std::make_unique<Conv1x1Op>(s, t, sparse);
}
std::unique_ptr<Op> make_depthwise(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<DepthwiseOp>(s, t); }

}  // namespace spruce
