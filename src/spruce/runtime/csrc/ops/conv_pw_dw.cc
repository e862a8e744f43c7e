// A 1x1 conv and the depthwise conv that alone reads its output, run as one
// operator over strips of rows (the loader's _fuse_pointwise_depthwise): for
// each strip of output rows, the 1x1 conv computes the input rows the strip
// needs, all channels, into a small buffer that stays in cache, and the
// depthwise conv reads them from there. Rows the next strip shares (the
// window's overlap) stay in the buffer, moved to its top, so no row is
// computed twice, and the large intermediate tensor is never written. Both
// halves call the kernels the unfused operators call, on the same sums, so the
// outputs are the unfused plan's bits.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

// Threads split output channels in chunks of this many: whole sparse row
// groups (kSpmmGroupRows) and whole dense panels.
constexpr int64_t kChannelGrain = 8;

// Floats of slack after each buffer plane: the sparse kernel stores a row
// range's last vector whole (output_padded) into it.
constexpr int64_t kBufferSlack = 16;

class ConvPwDwOp : public Op {
 public:
  ConvPwDwOp(const OpSpec& s, const std::vector<Tensor>& t) {
    // A second output: the means of the depthwise output's planes (_fuse_means).
    expect_arity(s, 1, 1, s.outputs.size() == 2 ? 2 : 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    expect_layout(s, x, kCHW, "input");
    expect_layout(s, y, kCHW, "output");
    if (x.shape.size() != 4 || y.shape.size() != 4 || x.shape[0] != y.shape[0]) {
      fail(s, "input and output must be 4-D with one batch size: " + dims_str(x.shape) + " -> " + dims_str(y.shape));
    }
    for (int64_t d : {x.shape[1], x.shape[2], x.shape[3], y.shape[1], y.shape[2], y.shape[3]}) {
      expect_positive(s, d, "dimension", 1 << 24);
    }
    batch_ = x.shape[0];
    h_ = x.shape[1], w_ = x.shape[2], k_ = x.shape[3], n_ = y.shape[3];
    pixels_ = h_ * w_;
    if (h_ > (1 << 16) || w_ > (1 << 16)) fail(s, "height and width must be at most 65536. Received: " + dims_str(x.shape));

    // The 1x1 conv: weights [N, K], sparse or dense.
    const int64_t sparse = get_int(s, "sparse");
    if (sparse != 0 && sparse != 1) fail(s, "sparse must be 0 or 1. Received: sparse=" + std::to_string(sparse));
    sparse_ = sparse == 1;
    const Array& pw = get_array(s, "pw_weights");
    expect_array(s, pw, {n_, k_}, "pw_weights");
    if (sparse_) {
      if (k_ * pixels_ * static_cast<int64_t>(sizeof(float)) >= (int64_t{1} << 31)) {
        fail(s, "input too large for 32-bit sparse offsets: " + dims_str(x.shape));
      }
      sparse_w_ = kernels::pack_sparse(pw.data.data(), static_cast<int32_t>(n_), static_cast<int32_t>(k_), pixels_);
      nnz_ = sparse_w_.nnz();
    } else {
      dense_w_ = kernels::pack_dense(pw.data.data(), static_cast<int32_t>(n_), static_cast<int32_t>(k_));
      nnz_ = n_ * k_;
    }
    pw_bias_ = bias_or_zeros(s, n_, "pw_bias");
    const int pw_act = epilogue_code(s, "pw_activation");
    pw_act_ = kernel_activation(pw_act);
    pw_swish_ = pw_act == kActSwishEpilogue;

    // The depthwise conv: weights [N, k, k], the fast kernels' sizes and strides.
    const int64_t kernel = get_int(s, "kernel"), stride = get_int(s, "stride");
    if (kernel != 3 && kernel != 5) fail(s, "kernel must be 3 or 5. Received: kernel=" + std::to_string(kernel));
    if (stride != 1 && stride != 2) fail(s, "stride must be 1 or 2. Received: stride=" + std::to_string(stride));
    const int64_t top = get_int(s, "pad_top"), left = get_int(s, "pad_left");
    const int64_t bottom = get_int(s, "pad_bottom"), right = get_int(s, "pad_right");
    for (int64_t v : {top, left, bottom, right}) expect_nonneg(s, v, "padding", kernel - 1);
    if (conv_out_size(h_, kernel, stride, 1, top, bottom) != y.shape[1] ||
        conv_out_size(w_, kernel, stride, 1, left, right) != y.shape[2]) {
      fail(s, "input " + dims_str(x.shape) + " does not give output " + dims_str(y.shape) +
                  " with this kernel, stride and padding");
    }
    p_.in_h = static_cast<int32_t>(h_), p_.in_w = static_cast<int32_t>(w_);
    p_.kernel = static_cast<int32_t>(kernel), p_.stride = static_cast<int32_t>(stride);
    p_.pad_top = static_cast<int32_t>(top), p_.pad_left = static_cast<int32_t>(left);
    p_.pad_bottom = static_cast<int32_t>(bottom), p_.pad_right = static_cast<int32_t>(right);
    out_h_ = y.shape[1], out_w_ = y.shape[2];
    out_stride_ = out_h_ * out_w_;
    const Array& dw = get_array(s, "weights");
    expect_array(s, dw, {n_, kernel, kernel}, "weights");
    dw_weights_ = dw.data;
    dw_bias_ = bias_or_zeros(s, n_);
    const int act = epilogue_code(s, "activation");
    act_ = kernel_activation(act);
    swish_ = act == kActSwishEpilogue;
    means_ = expect_mean_output(s, t, batch_, n_);

    // Strips of `strip_rows` output rows; the buffer holds the input rows of one.
    const int64_t strip_rows = get_int(s, "strip_rows");
    expect_positive(s, strip_rows, "strip_rows", 1 << 16);
    strip_ = std::min(strip_rows, out_h_);
    // The last strip also holds enough rows for a short vector's spare lanes
    // (up to 7 floats past a row) to stay in the plane (see run_channels).
    last_rows_ = std::min(out_h_, std::max(out_h_ - (out_h_ - 1) / strip_ * strip_, (7 + out_w_ - 1) / out_w_));
    buffer_rows_ = std::min<int64_t>(h_, (std::max(strip_, last_rows_) - 1) * stride + kernel);
    buffer_plane_ = (buffer_rows_ * w_ + kBufferSlack + 15) / 16 * 16;
    if (static_cast<double>(n_) * (buffer_plane_ + last_rows_ * out_w_) > 1e9) {
      fail(s, "the strip buffer would take more than 4 GB; lower strip_rows. Received: strip_rows=" +
                  std::to_string(strip_));
    }
  }

  const char* family() const override { return sparse_ ? "spmm+dwconv" : "gemm+dwconv"; }
  double flops() const override {
    return 2.0 * batch_ * (static_cast<double>(pixels_) * nnz_ + static_cast<double>(n_) * out_h_ * out_w_ * p_.kernel * p_.kernel);
  }
  // The strip buffer ([N][buffer_plane_]), then the last strip's output
  // ([N][last_rows_ * out_w], planes back to back: see run_channels).
  size_t scratch_floats() const override {
    return static_cast<size_t>(n_ * buffer_plane_ + n_ * last_rows_ * out_w_ + kBufferSlack);
  }
  bool set_output_plane_stride(int64_t stride) override {
    if (stride < out_h_ * out_w_) return false;
    out_stride_ = stride;
    return true;
  }

  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    float* means = means_ ? (*ctx.tensors)[outputs[1]].data : nullptr;
    const int threads = ctx.pool->num_threads();
    for (int64_t b = 0; b < batch_; ++b) {
      const float* xi = x + b * k_ * pixels_;
      float* yi = y + b * n_ * out_stride_;
      float* mi = means != nullptr ? means + b * n_ : nullptr;
      auto body = [&](size_t n0, size_t n1) {
        run_channels(ctx.scratch, xi, yi, mi, static_cast<int64_t>(n0), static_cast<int64_t>(n1));
      };
      if (threads == 1 || flops() / batch_ < kParallelMinFlops) {
        body(0, static_cast<size_t>(n_));
      } else {
        // One chunk of channels per thread, each through every strip: the
        // kernels' results do not depend on the split, so neither do the bits.
        const int64_t chunk = ((n_ + threads - 1) / threads + kChannelGrain - 1) / kChannelGrain * kChannelGrain;
        ctx.pool->parallel_for(static_cast<size_t>(n_), static_cast<size_t>(chunk), body);
      }
    }
  }

 private:
  static int epilogue_code(const OpSpec& s, const char* key) {
    const int64_t a = get_int(s, key, kActNone);
    if (a != kActNone && a != kActRelu && a != kActRelu6 && a != kActReluN1To1 && a != kActHardSwishEpilogue &&
        a != kActSwishEpilogue) {
      fail(s, std::string("unsupported ") + key + " code " + std::to_string(a));
    }
    return static_cast<int>(a);
  }

  // The 1x1 conv's rows [r0, r1) of channels [n0, n1) into buffer rows from
  // `at` (pixel offsets from each buffer plane's start).
  void pointwise_rows(const float* xi, float* buffer, int64_t at, int64_t n0, int64_t n1, int64_t r0,
                      int64_t r1) const {
    const int64_t count = (r1 - r0) * w_;
    const float* in = xi + r0 * w_;
    float* out = buffer + at;
    if (sparse_) {
      // The input may be read to whole vectors past the range (the arena's
      // slack after the tensor), the buffer written so (kBufferSlack).
      kernels::spmm(sparse_w_, pw_bias_.data(), in, out, buffer_plane_, static_cast<int32_t>(n0),
                    static_cast<int32_t>(n1), 0, count, pw_act_, kernels::default_isa(), /*input_padded=*/true,
                    /*output_padded=*/true);
    } else {
      kernels::gemm(dense_w_, pw_bias_.data(), in, pixels_, out, buffer_plane_, static_cast<int32_t>(n0),
                    static_cast<int32_t>(n1), 0, count, pw_act_);
    }
    if (pw_swish_) kernels::swish_rows(buffer, buffer_plane_, n0, n1, at, at + count);
  }

  // The depthwise conv of channels [n0, n1) over the buffer, with the
  // window's geometry `q`, to `out` (planes q.out_plane() apart).
  void depthwise(const kernels::DwConvParams& q, const float* buffer, float* out, int64_t n0, int64_t n1) const {
    const int32_t c0 = static_cast<int32_t>(n0), c1 = static_cast<int32_t>(n1);
    if (swish_ && kernels::dwconv_chw_swish(q, dw_weights_.data(), dw_bias_.data(), buffer, out, c0, c1, act_)) return;
    kernels::dwconv_chw(q, dw_weights_.data(), dw_bias_.data(), buffer, out, c0, c1, act_);
    if (swish_) kernels::swish_rows(out, q.out_plane(), n0, n1, 0, static_cast<int64_t>(q.out_h()) * q.out_w());
  }

  // Every strip of channels [n0, n1). Their buffer planes and last-strip
  // planes are theirs alone, so threads run disjoint channel ranges at once.
  void run_channels(float* scratch, const float* xi, float* yi, float* means, int64_t n0, int64_t n1) const {
    float* buffer = scratch;
    float* last = scratch + n_ * buffer_plane_;
    const int64_t s = p_.stride, k = p_.kernel;
    int64_t held_lo = 0, held_hi = 0;  // input rows in the buffer, from buffer row 0
    const int64_t last_begin = out_h_ - last_rows_;
    for (int64_t oy0 = 0; oy0 < out_h_;) {
      const int64_t oy1 = oy0 < last_begin ? std::min(last_begin, oy0 + strip_) : out_h_;
      // Input rows [a, b) of the strip's windows, padding included; [lo, hi) exist.
      const int64_t a = oy0 * s - p_.pad_top, b = (oy1 - 1) * s - p_.pad_top + k;
      const int64_t lo = std::max<int64_t>(0, a), hi = std::min(h_, b);
      int64_t from = lo;
      if (lo < held_hi) {
        // The rows this strip shares with the last one move to the buffer's top.
        const int64_t keep = (held_hi - lo) * w_;
        if (lo > held_lo) {
          for (int64_t n = n0; n < n1; ++n) {
            float* plane = buffer + n * buffer_plane_;
            std::memmove(plane, plane + (lo - held_lo) * w_, static_cast<size_t>(keep) * sizeof(float));
          }
        }
        from = held_hi;
      }
      if (from < hi) pointwise_rows(xi, buffer, (from - lo) * w_, n0, n1, from, hi);
      held_lo = lo, held_hi = hi;

      kernels::DwConvParams q = p_;
      q.in_h = static_cast<int32_t>(hi - lo);
      q.pad_top = static_cast<int32_t>(lo - a);
      q.pad_bottom = static_cast<int32_t>(b - hi);
      q.in_stride = buffer_plane_;
      if (oy1 < out_h_) {
        // A short last vector may store its spare lanes (up to 7 floats) past
        // the strip's last row, into the rows of the same plane that the
        // strips after it write (the last one holds at least 7 floats).
        q.out_stride = out_stride_;
        depthwise(q, buffer, yi + oy0 * out_w_, n0, n1);
        oy0 = oy1;
        continue;
      }
      // The last strip: past its rows come the next plane's first rows,
      // already written, so it goes to planes of its own (back to back, the
      // kernel keeps the range's last one exact) and is copied over.
      q.out_stride = 0;
      depthwise(q, buffer, last, n0, n1);
      const int64_t count = (oy1 - oy0) * out_w_;
      for (int64_t n = n0; n < n1; ++n) {
        std::memcpy(yi + n * out_stride_ + oy0 * out_w_, last + n * count, static_cast<size_t>(count) * sizeof(float));
      }
      oy0 = oy1;
    }
    if (means != nullptr) {
      // MEAN's kernel over the finished planes: the means are its bits.
      kernels::global_avg_pool_chw(yi, out_h_ * out_w_, out_stride_, means, static_cast<int32_t>(n0),
                                   static_cast<int32_t>(n1));
    }
  }

  bool sparse_ = false;
  kernels::SparseMatrix sparse_w_;
  kernels::PackedDense dense_w_;
  std::vector<float> pw_bias_;
  kernels::Activation pw_act_;
  bool pw_swish_ = false;  // swish over each computed piece of the buffer
  kernels::DwConvParams p_;  // the depthwise conv over the whole image
  std::vector<float> dw_weights_, dw_bias_;
  kernels::Activation act_;
  bool swish_ = false;  // swish over each strip of output
  bool means_ = false;  // the planes' means to outputs[1]
  int64_t batch_ = 1, h_ = 0, w_ = 0, k_ = 0, n_ = 0, pixels_ = 0, nnz_ = 0;
  int64_t out_h_ = 0, out_w_ = 0, out_stride_ = 0;
  int64_t strip_ = 1;          // output rows per strip
  int64_t buffer_rows_ = 0;    // input rows one strip reads, at most
  int64_t buffer_plane_ = 0;   // floats between buffer planes
  int64_t last_rows_ = 0;      // output rows of the last strip (it may be longer than strip_)
};

}  // namespace

std::unique_ptr<Op> make_conv_pw_dw(const OpSpec& s, const std::vector<Tensor>& t) {
  return std::make_unique<ConvPwDwOp>(s, t);
}

}  // namespace spruce
