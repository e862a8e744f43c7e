// Element-wise activations: portable loops and dispatch.
#include <algorithm>
#include <cmath>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

namespace {

void unary_portable(UnaryFn f, const float* x, float* y, size_t n) {
  switch (f) {
    case UnaryFn::kSigmoid: for (size_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i])); break;
    case UnaryFn::kTanh: for (size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]); break;
    case UnaryFn::kElu: for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : std::expm1(x[i]); break;
    case UnaryFn::kHardSwish:
      for (size_t i = 0; i < n; ++i) y[i] = x[i] * std::min(std::max(x[i] + 3.0f, 0.0f), 6.0f) / 6.0f;
      break;
    case UnaryFn::kSwish: for (size_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])); break;
  }
}

}  // namespace

void unary(UnaryFn f, const float* x, float* y, size_t n, Isa isa) {
#if SPRUCE_X86_KERNELS
  const Isa resolved = resolve_isa(isa);
  if (resolved == Isa::kAvx512 && unary_avx512(f, x, y, n)) return;
  if (resolved >= Isa::kAvx2) {
    unary_avx2(f, x, y, n);
    return;
  }
#endif
  unary_portable(f, x, y, n);
}

}  // namespace kernels
}  // namespace spruce
