// 1x1 convs on a 1x1 image (the two small convs of a squeeze-and-excite
// block, after the mean over height and width): a matrix-vector product per
// image. The 1x1 conv kernels tile pixels in vectors of 8 or more, so on one
// pixel they ran masked single-lane loads per weight. Here dense rows are dot products over
// contiguous weights, and sparse rows walk their nonzeros (CSR, kernels::spmv). A 1x1 image
// has the same memory order in either layout, so the op takes both.
#include <algorithm>

#include "kernels/kernels.h"
#include "ops/common.h"
#include "ops/ops.h"

namespace spruce {

namespace {

class MatVecOp : public Op {
 public:
  MatVecOp(const OpSpec& s, const std::vector<Tensor>& t) {
    expect_arity(s, 1, 1, 1);
    const Tensor& x = in_t(s, t, 0);
    const Tensor& y = out_t(s, t, 0);
    if (x.shape.size() != 4 || y.shape.size() != 4 || x.shape[1] != 1 || x.shape[2] != 1 || y.shape[1] != 1 ||
        y.shape[2] != 1 || x.shape[0] != y.shape[0]) {
      fail(s, "needs a 1x1 image in and out with one batch: " + dims_str(x.shape) + " -> " + dims_str(y.shape));
    }
    batch_ = x.shape[0], k_ = x.shape[3], n_ = y.shape[3];
    if (k_ > (1 << 24) || n_ > (1 << 24)) fail(s, "too many channels");
    const Array& w = get_array(s, "weights");
    expect_array(s, w, {n_, k_}, "weights");
    sparse_ = get_int(s, "sparse", 0) != 0;
    if (sparse_) {
      row_ptr_.push_back(0);
      for (int64_t n = 0; n < n_; ++n) {
        for (int64_t k = 0; k < k_; ++k) {
          const float v = w.data[static_cast<size_t>(n * k_ + k)];
          if (v != 0.0f) values_.push_back(v), cols_.push_back(static_cast<int32_t>(k));
        }
        row_ptr_.push_back(static_cast<int64_t>(values_.size()));
      }
    } else {
      values_ = w.data;
    }
    bias_.assign(static_cast<size_t>(n_), 0.0f);
    if (const Array* b = find_array(s, "bias")) {
      expect_array(s, *b, {n_}, "bias");
      bias_ = b->data;
    }
    act_ = checked_epilogue_activation(s);
    activation_range(act_, &lo_, &hi_);
  }
  const char* family() const override { return sparse_ ? "matvec_sparse" : "matvec"; }
  double flops() const override { return 2.0 * batch_ * static_cast<double>(sparse_ ? values_.size() : n_ * k_); }
  void run(const RunContext& ctx) const override {
    const float* x = (*ctx.tensors)[inputs[0]].data;
    float* y = (*ctx.tensors)[outputs[0]].data;
    for (int64_t b = 0; b < batch_; ++b) {
      const float* xi = x + b * k_;
      float* yi = y + b * n_;
      if (sparse_) {
        kernels::spmv(values_.data(), cols_.data(), row_ptr_.data(), xi, yi, 0, n_);
        for (int64_t n = 0; n < n_; ++n) yi[n] = bias_[static_cast<size_t>(n)] + yi[n];
      } else {
        for (int64_t n = 0; n < n_; ++n) yi[n] = bias_[static_cast<size_t>(n)] + dense_row(n, xi);
      }
      if (act_ == kActSwishEpilogue) {
        kernels::unary(kernels::UnaryFn::kSwish, yi, yi, static_cast<size_t>(n_));
      } else if (act_ == kActHardSwishEpilogue) {
        for (int64_t n = 0; n < n_; ++n) yi[n] = yi[n] * std::min(std::max(yi[n] + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
      } else {
        clamp_range(yi, static_cast<size_t>(n_), lo_, hi_);
      }
    }
  }

 private:
  // Eight partial sums, so the compiler vectorises the dot product on any ISA.
  float dense_row(int64_t n, const float* x) const {
    const float* w = values_.data() + n * k_;
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= k_; k += 8) {
      for (int i = 0; i < 8; ++i) part[i] += w[k + i] * x[k + i];
    }
    float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; k < k_; ++k) sum += w[k] * x[k];
    return sum;
  }

  bool sparse_ = false;
  std::vector<float> values_;     // dense [N][K], or the nonzeros row by row
  std::vector<int32_t> cols_;     // sparse: input channel of each nonzero
  std::vector<int64_t> row_ptr_;  // sparse: row n's nonzeros are [row_ptr[n], row_ptr[n + 1])
  std::vector<float> bias_;
  int act_ = 0;
  float lo_ = 0.0f, hi_ = 0.0f;
  int64_t batch_ = 1, k_ = 0, n_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_matvec(const OpSpec& s, const std::vector<Tensor>& t) { return std::make_unique<MatVecOp>(s, t); }

}  // namespace spruce
