// Shared checks and parameters of the int8 operators (ops/quantized_*.cc).
//
// The loader passes int8 weights and int32 biases in the plan's float arrays:
// int8 values are exact in float32, and an int32 bias is split into
// bias_hi * 65536 + bias_lo, both exact. Requantization scales arrive as the
// float32 values XNNPACK computes (input_scale * weight_scale / output_scale).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "ops/common.h"

namespace spruce {

inline void expect_dtype(const OpSpec& s, const Tensor& t, int dtype, const char* which) {
  if (t.dtype != dtype) {
    fail(s, std::string(which) + " must be " + (dtype == kInt8 ? "int8" : "float32") + " (shape " +
                dims_str(t.shape) + ")");
  }
}

inline int32_t zero_point(const OpSpec& s, const char* key) {
  const int64_t v = get_int(s, key);
  if (v < -128 || v > 127) fail(s, std::string(key) + " must be in [-128, 127]. Received: " + std::to_string(v));
  return static_cast<int32_t>(v);
}

// The output zero point and clamp: output_min <= output_max, both int8.
inline kernels::QS8Output qs8_output(const OpSpec& s) {
  kernels::QS8Output o;
  o.zero_point = zero_point(s, "output_zero_point");
  const int64_t lo = get_int(s, "output_min", -128), hi = get_int(s, "output_max", 127);
  if (lo < -128 || hi > 127 || lo > hi) {
    fail(s, "output_min and output_max must satisfy -128 <= min <= max <= 127. Received: " +
                std::to_string(lo) + ", " + std::to_string(hi));
  }
  o.lo = static_cast<float>(lo - o.zero_point);
  o.hi = static_cast<float>(hi - o.zero_point);
  return o;
}

// Array `key` as int8 values, checked to be integers in [-128, 127].
inline std::vector<int8_t> int8_array(const OpSpec& s, const char* key, const std::vector<int64_t>& shape) {
  const Array& a = get_array(s, key);
  expect_array(s, a, shape, key);
  std::vector<int8_t> out(a.data.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const float v = a.data[i];
    if (!(v >= -128.0f && v <= 127.0f) || v != std::floor(v)) {
      fail(s, std::string(key) + " must hold int8 values. Received: " + std::to_string(v) + " at " + std::to_string(i));
    }
    out[i] = static_cast<int8_t>(v);
  }
  return out;
}

// The int32 bias from bias_hi and bias_lo (zeros when absent).
inline std::vector<int32_t> int32_bias(const OpSpec& s, int64_t n) {
  const Array* hi = find_array(s, "bias_hi");
  const Array* lo = find_array(s, "bias_lo");
  std::vector<int32_t> out(static_cast<size_t>(n), 0);
  if (hi == nullptr && lo == nullptr) return out;
  if (hi == nullptr || lo == nullptr) fail(s, "needs both bias_hi and bias_lo, or neither");
  expect_array(s, *hi, {n}, "bias_hi");
  expect_array(s, *lo, {n}, "bias_lo");
  for (int64_t i = 0; i < n; ++i) {
    const float h = hi->data[i], l = lo->data[i];
    if (!(h >= -32768.0f && h <= 32767.0f && l >= 0.0f && l <= 65535.0f) || h != std::floor(h) || l != std::floor(l)) {
      fail(s, "bias_hi must be an integer in [-32768, 32767] and bias_lo in [0, 65535]. Received: " +
                  std::to_string(h) + ", " + std::to_string(l));
    }
    out[i] = static_cast<int32_t>(static_cast<int64_t>(h) * 65536 + static_cast<int64_t>(l));
  }
  return out;
}

// Per-channel requantization scales: positive, finite, below 256 (XNNPACK's limit).
inline std::vector<float> requant_scales(const OpSpec& s, int64_t n) {
  const Array& a = get_array(s, "scale");
  expect_array(s, a, {n}, "scale");
  for (float v : a.data) {
    if (!(v > 0.0f && v < 256.0f)) fail(s, "scale values must be in (0, 256). Received: " + std::to_string(v));
  }
  return a.data;
}

}  // namespace spruce
