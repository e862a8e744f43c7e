// Element-wise activation functions over float arrays: the standalone
// activation operators and swish (a LOGISTIC and a MUL of the same input,
// fused by the loader). The AVX2 versions evaluate exp with a polynomial
// (relative error a few ulp, far inside the engine's 1e-4 tolerance on
// logits); the portable ones call the C library.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace spruce {
namespace kernels {

enum class UnaryFn : int {
  kSigmoid,    // 1 / (1 + exp(-x))
  kTanh,       // tanh(x)
  kElu,        // x > 0 ? x : exp(x) - 1
  kHardSwish,  // x * min(max(x + 3, 0), 6) / 6
  kSwish,      // x / (1 + exp(-x))
};

// y[i] = f(x[i]) for i < n; y may be x.
void unary(UnaryFn f, const float* x, float* y, size_t n, Isa isa = default_isa());

// Swish in place over rows [r0, r1) x columns [c0, c1) of a [rows][stride]
// array: a conv's epilogue over the part of its output it just wrote.
inline void swish_rows(float* y, int64_t stride, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = y + r * stride + c0;
    unary(UnaryFn::kSwish, row, row, static_cast<size_t>(c1 - c0));
  }
}

}  // namespace kernels
}  // namespace spruce
