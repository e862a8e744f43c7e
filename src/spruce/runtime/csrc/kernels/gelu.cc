// GELU (TFLite's GELU operator, ConvNeXt's activation): the portable loops and
// the dispatch. The portable loops evaluate gelu_vec.h's formulas with the C
// library's exp, so every ISA computes the same functions to a few ulp.
#include <cmath>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

namespace {

constexpr float kErfc[] = {0.17087277f,  -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                           -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};

void gelu_portable(const float* x, float* y, size_t n, bool approximate) {
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (approximate) {
      const float two_u = (v + 0.044715f * v * v * v) * (2.0f * 0.79788456080286536f);
      y[i] = v / (1.0f + std::exp(-two_u));
      continue;
    }
    const float z = std::fabs(v) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = kErfc[0];
    for (size_t k = 1; k < sizeof(kErfc) / sizeof(kErfc[0]); ++k) p = p * t + kErfc[k];
    const float half_erfc = 0.5f * t * std::exp(p - z * z);
    y[i] = v * (v < 0.0f ? half_erfc : 1.0f - half_erfc);
  }
}

}  // namespace

void gelu(const float* x, float* y, size_t n, bool approximate, Isa isa) {
#if SPRUCE_X86_KERNELS
  const Isa resolved = resolve_isa(isa);
  if (resolved == Isa::kAvx512) {
    gelu_avx512(x, y, n, approximate);
    return;
  }
  if (resolved >= Isa::kAvx2) {
    gelu_avx2(x, y, n, approximate);
    return;
  }
#endif
  gelu_portable(x, y, n, approximate);
}

}  // namespace kernels
}  // namespace spruce
