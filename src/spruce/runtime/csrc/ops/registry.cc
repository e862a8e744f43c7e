// Maps a plan's operator kind to its implementation.
#include "ops/ops.h"

namespace spruce {

namespace {

// The int8 operators, and the float kinds whose int8 twins read int8 tensors
// (the loader's layout changes and reshapes name no type).
std::unique_ptr<Op> make_int8_op(const OpSpec& s, const std::vector<Tensor>& t) {
  const std::string& k = s.kind;
  if (k == "quantize_s8") return make_quantize(s, t);
  if (k == "dequantize_s8") return make_dequantize(s, t);
  if (k == "add_s8") return make_qadd(s, t);
  if (k == "conv1x1_s8") return make_qconv1x1(s, t);
  if (k == "conv_s8") return make_qconv(s, t);
  if (k == "depthwise_s8") return make_qdepthwise(s, t);
  if (k == "fully_connected_s8") return make_qfully_connected(s, t);
  if (k == "transpose_s8" || k == "transpose") return make_qtranspose(s, t);
  if (k == "copy_s8" || k == "copy") return make_qcopy(s, t);
  if (k == "pad_s8") return make_qpad(s, t);
  if (k == "mean_hw_s8") return make_qmean_hw(s, t);
  return nullptr;
}

bool reads_or_writes_int8(const OpSpec& s, const std::vector<Tensor>& t) {
  for (const std::vector<int>* ids : {&s.inputs, &s.outputs}) {
    for (int i : *ids) {
      if (t[static_cast<size_t>(i)].dtype == kInt8) return true;
    }
  }
  return false;
}

}  // namespace

std::unique_ptr<Op> make_op(const OpSpec& s, const std::vector<Tensor>& t) {
  const std::string& k = s.kind;
  const bool int8_kind = k.size() > 3 && k.compare(k.size() - 3, 3, "_s8") == 0;
  if (int8_kind || reads_or_writes_int8(s, t)) {
    if (std::unique_ptr<Op> op = make_int8_op(s, t)) return op;
    fail(s, int8_kind ? "unknown operator kind" : "is a float32 operator; it cannot read or write int8 tensors");
  }
  if (k == "conv_entry") return make_conv_entry(s, t);
  if (k == "conv1x1_sparse") return make_conv1x1(s, t, true);
  if (k == "conv1x1_dense") return make_conv1x1(s, t, false);
  if (k == "conv_general") return make_conv_general(s, t);
  if (k == "conv_im2col") return make_conv_im2col(s, t);
  if (k == "conv_sparse") return make_conv_sparse(s, t);
  if (k == "conv_matvec") return make_matvec(s, t);
  if (k == "depthwise") return make_depthwise(s, t);
  if (k == "conv1x1_depthwise") return make_conv_pw_dw(s, t);
  if (k == "depthwise_general") return make_depthwise_general(s, t);
  if (k == "unary") return make_unary(s, t);
  if (k == "add") return make_binary(s, t, BinaryKind::kAdd);
  if (k == "mul") return make_binary(s, t, BinaryKind::kMul);
  if (k == "sub") return make_binary(s, t, BinaryKind::kSub);
  if (k == "div") return make_binary(s, t, BinaryKind::kDiv);
  if (k == "squared_difference") return make_binary(s, t, BinaryKind::kSquaredDifference);
  if (k == "mean") return make_mean(s, t);
  if (k == "conv_grouped") return make_conv_grouped(s, t);
  if (k == "slice") return make_slice(s, t);
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
