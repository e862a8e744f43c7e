// Shared checks and small helpers for the operator implementations.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "graph/model.h"
#include "kernels/kernels.h"

namespace spruce {

// Convolutions with less work than this per image run on one thread: waking
// the pool and waiting for it costs more than halving a layer this small saves.
constexpr double kParallelMinFlops = 2e5;

inline std::string dims_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline void expect_arity(const OpSpec& s, size_t min_in, size_t max_in, size_t n_out) {
  if (s.inputs.size() < min_in || s.inputs.size() > max_in || s.outputs.size() != n_out) {
    fail(s, "expected " + std::to_string(min_in) + ".." + std::to_string(max_in) + " inputs and " +
                std::to_string(n_out) + " outputs; received " + std::to_string(s.inputs.size()) +
                " and " + std::to_string(s.outputs.size()));
  }
}

inline const Tensor& in_t(const OpSpec& s, const std::vector<Tensor>& t, size_t i) {
  return t[static_cast<size_t>(s.inputs[i])];
}
inline const Tensor& out_t(const OpSpec& s, const std::vector<Tensor>& t, size_t i) {
  return t[static_cast<size_t>(s.outputs[i])];
}

inline void expect_layout(const OpSpec& s, const Tensor& t, int layout, const char* which) {
  if (t.layout != layout) {
    fail(s, std::string(which) + " must be " + (layout == kCHW ? "channel-major" : "row-major") +
                " (shape " + dims_str(t.shape) + ")");
  }
}

inline void expect_shape(const OpSpec& s, const Tensor& t, const std::vector<int64_t>& shape,
                         const char* which) {
  if (t.shape != shape) {
    fail(s, std::string(which) + " should have shape " + dims_str(shape) + "; the plan says " +
                dims_str(t.shape));
  }
}

inline void expect_array(const OpSpec& s, const Array& a, const std::vector<int64_t>& shape,
                         const char* which) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  if (a.shape != shape || a.data.size() != n) {
    fail(s, std::string(which) + " should have shape " + dims_str(shape) + "; received " +
                dims_str(a.shape) + " with " + std::to_string(a.data.size()) + " values");
  }
}

inline int checked_activation(const OpSpec& s) {
  int64_t a = get_int(s, "activation", kActNone);
  if (a != kActNone && a != kActRelu && a != kActRelu6 && a != kActReluN1To1) {
    fail(s, "unsupported fused activation code " + std::to_string(a));
  }
  return static_cast<int>(a);
}

// Hard-swish applied in a conv kernel's epilogue (kernels::Activation::hard_swish):
// the loader's code when a HARD_SWISH is the only reader of a conv's output.
constexpr int kActHardSwishEpilogue = 16;

// Swish (x * sigmoid(x)) over a conv's output while it is still in cache: the
// loader's code when a LOGISTIC and a MUL by its input read only a conv's output.
constexpr int kActSwishEpilogue = 17;

// checked_activation, also accepting kActHardSwishEpilogue and kActSwishEpilogue.
inline int checked_epilogue_activation(const OpSpec& s) {
  const int64_t a = get_int(s, "activation", kActNone);
  if (a == kActHardSwishEpilogue || a == kActSwishEpilogue) return static_cast<int>(a);
  return checked_activation(s);
}

// An op's optional per-channel bias array `key` of n floats, zeros when absent.
inline std::vector<float> bias_or_zeros(const OpSpec& s, int64_t n, const char* key = "bias") {
  if (const Array* b = find_array(s, key)) {
    expect_array(s, *b, {n}, key);
    return b->data;
  }
  return std::vector<float>(static_cast<size_t>(n), 0.0f);
}

// A depthwise conv's optional second output, the MEAN of each channel of each
// image (the loader's _fuse_means): [batch, 1, 1, channels] or [batch, channels].
// True when the op has it.
inline bool expect_mean_output(const OpSpec& s, const std::vector<Tensor>& t, int64_t batch, int64_t channels) {
  if (s.outputs.size() != 2) return false;
  const Tensor& m = out_t(s, t, 1);
  if (m.shape != std::vector<int64_t>{batch, 1, 1, channels} && m.shape != std::vector<int64_t>{batch, channels}) {
    fail(s, "the mean output must have shape " + dims_str({batch, 1, 1, channels}) + " or " +
                dims_str({batch, channels}) + ". Received: " + dims_str(m.shape));
  }
  return true;
}

// A conv's optional second input, the residual its epilogue adds before the
// activation (a fused ADD; kernels.h, gemm): laid out exactly like the output.
// Swish runs after the kernel's epilogue, so it cannot follow a residual.
inline void expect_residual(const OpSpec& s, const std::vector<Tensor>& t, const Tensor& y, size_t index = 1) {
  const Tensor& r = in_t(s, t, index);
  if (r.shape != y.shape || r.layout != y.layout) {
    fail(s, "the residual input must have the output's shape " + dims_str(y.shape) + " and layout. Received: " +
                dims_str(r.shape) + (r.layout != y.layout ? " in another layout" : ""));
  }
  if (get_int(s, "activation", kActNone) == kActSwishEpilogue) {
    fail(s, "a residual input cannot be combined with the swish epilogue; run the ADD as its own operator");
  }
}

// Output range a fused activation clamps to.
inline void activation_range(int act, float* lo, float* hi) {
  *lo = -INFINITY;
  *hi = INFINITY;
  if (act == kActRelu) *lo = 0.0f;
  if (act == kActRelu6) *lo = 0.0f, *hi = 6.0f;
  if (act == kActReluN1To1) *lo = -1.0f, *hi = 1.0f;
}

// The kernels' fused epilogue for a TFLite activation code (or kActHardSwishEpilogue).
inline kernels::Activation kernel_activation(int act) {
  kernels::Activation a;
  activation_range(act, &a.min, &a.max);
  a.hard_swish = act == kActHardSwishEpilogue;
  return a;
}

inline void clamp_range(float* x, size_t n, float lo, float hi) {
  if (lo == -INFINITY && hi == INFINITY) return;
  for (size_t i = 0; i < n; ++i) x[i] = std::min(std::max(x[i], lo), hi);
}

// Output size of a convolution window, or -1 when the padding/shape disagree.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t dilation, int64_t pad_lo,
                             int64_t pad_hi) {
  int64_t span = dilation * (k - 1) + 1;
  int64_t padded = in + pad_lo + pad_hi;
  if (padded < span) return -1;
  return (padded - span) / stride + 1;
}

inline void expect_positive(const OpSpec& s, int64_t v, const char* what, int64_t max = 1 << 20) {
  if (v < 1 || v > max) fail(s, std::string(what) + " must be in [1, " + std::to_string(max) + "]. Received: " + std::to_string(v));
}

inline void expect_nonneg(const OpSpec& s, int64_t v, const char* what, int64_t max = 1 << 20) {
  if (v < 0 || v > max) fail(s, std::string(what) + " must be in [0, " + std::to_string(max) + "]. Received: " + std::to_string(v));
}

}  // namespace spruce
