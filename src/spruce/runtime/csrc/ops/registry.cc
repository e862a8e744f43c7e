// Maps a plan's operator kind to its implementation.
#include "ops/ops.h"

namespace spruce {

std::unique_ptr<Op> make_op(const OpSpec& s, const std::vector<Tensor>& t) {
  const std::string& k = s.kind;
  if (k == "conv_entry") return make_conv_entry(s, t);
  if (k == "conv1x1_sparse") return make_conv1x1(s, t, true);
  if (k == "conv1x1_dense") return make_conv1x1(s, t, false);
  if (k == "conv_general") return make_conv_general(s, t);
  if (k == "conv_im2col") return make_conv_im2col(s, t);
  if (k == "conv_sparse") return make_conv_sparse(s, t);
  if (k == "conv_matvec") return make_matvec(s, t);
  if (k == "depthwise") return make_depthwise(s, t);
  if (k == "depthwise_general") return make_depthwise_general(s, t);
  if (k == "unary") return make_unary(s, t);
  if (k == "add") return make_binary(s, t, BinaryKind::kAdd);
  if (k == "mul") return make_binary(s, t, BinaryKind::kMul);
  if (k == "sub") return make_binary(s, t, BinaryKind::kSub);
  if (k == "div") return make_binary(s, t, BinaryKind::kDiv);
  if (k == "transpose") return make_transpose(s, t);
  if (k == "copy") return make_copy(s, t);
  if (k == "pad") return make_pad(s, t);
  if (k == "mean_hw") return make_mean_hw(s, t);
  if (k == "max_pool") return make_pool2d(s, t, true);
  if (k == "avg_pool") return make_pool2d(s, t, false);
  if (k == "concat") return make_concat(s, t);
  if (k == "fully_connected") return make_fully_connected(s, t);
  if (k == "softmax") return make_softmax(s, t);
  fail(s, "unknown operator kind");
}

}  // namespace spruce
