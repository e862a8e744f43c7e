// Factories for the engine's operators (one family per source file).
#pragma once

#include <memory>
#include <vector>

#include "graph/model.h"

namespace spruce {

// elementwise.cc
enum class BinaryKind { kAdd, kMul, kSub, kDiv, kSquaredDifference };
std::unique_ptr<Op> make_unary(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_binary(const OpSpec& s, const std::vector<Tensor>& t, BinaryKind kind);
// layout.cc
std::unique_ptr<Op> make_transpose(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_copy(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_pad(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_mean_hw(const OpSpec& s, const std::vector<Tensor>& t);
// conv_im2col.cc
std::unique_ptr<Op> make_conv_im2col(const OpSpec& s, const std::vector<Tensor>& t);
// conv_sparse.cc (sparse KxK and strided convs, kernels/spconv.h)
std::unique_ptr<Op> make_conv_sparse(const OpSpec& s, const std::vector<Tensor>& t);
// matvec.cc
std::unique_ptr<Op> make_matvec(const OpSpec& s, const std::vector<Tensor>& t);
// pool.cc
std::unique_ptr<Op> make_pool2d(const OpSpec& s, const std::vector<Tensor>& t, bool max);
// concat.cc
std::unique_ptr<Op> make_concat(const OpSpec& s, const std::vector<Tensor>& t);
// reduce.cc
std::unique_ptr<Op> make_mean(const OpSpec& s, const std::vector<Tensor>& t);
// slice.cc
std::unique_ptr<Op> make_slice(const OpSpec& s, const std::vector<Tensor>& t);
// conv_grouped.cc
std::unique_ptr<Op> make_conv_grouped(const OpSpec& s, const std::vector<Tensor>& t);
// dense.cc
std::unique_ptr<Op> make_fully_connected(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_softmax(const OpSpec& s, const std::vector<Tensor>& t);
// conv_general.cc
std::unique_ptr<Op> make_conv_general(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_depthwise_general(const OpSpec& s, const std::vector<Tensor>& t);
// conv.cc (the hot kernels of kernels/kernels.h)
std::unique_ptr<Op> make_conv_entry(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_conv1x1(const OpSpec& s, const std::vector<Tensor>& t, bool sparse);
std::unique_ptr<Op> make_depthwise(const OpSpec& s, const std::vector<Tensor>& t);
// conv_pw_dw.cc (a 1x1 conv and the depthwise conv reading it, over strips of rows)
std::unique_ptr<Op> make_conv_pw_dw(const OpSpec& s, const std::vector<Tensor>& t);

// quantized_*.cc: the int8 operators (kinds ending in "_s8"; see loader's runtime/quantized.py)
std::unique_ptr<Op> make_quantize(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_dequantize(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qadd(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qconv1x1(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qconv(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qdepthwise(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qfully_connected(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qtranspose(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qcopy(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qpad(const OpSpec& s, const std::vector<Tensor>& t);
std::unique_ptr<Op> make_qmean_hw(const OpSpec& s, const std::vector<Tensor>& t);

}  // namespace spruce
