// The portable multiply-add peak, and the choice between it and the vector ones.
#include "bench/fma_peak.h"

#include <chrono>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace bench {

double fma_peak_gflops(kernels::Isa isa, double seconds) {
#if SPRUCE_X86_KERNELS
  const kernels::Isa resolved = kernels::resolve_isa(isa);
  if (resolved == kernels::Isa::kAvx512) return fma_peak_gflops_avx512(seconds);
  if (resolved >= kernels::Isa::kAvx2) return fma_peak_gflops_avx2(seconds);
#endif
  float a[8];
  for (int i = 0; i < 8; ++i) a[i] = 0.001f * static_cast<float>(i);
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0, flops = 0.0;
  while (elapsed < seconds) {
    for (int r = 0; r < 100000; ++r) {
      for (float& x : a) x = x * 0.9999f + 1e-5f;  // multiply-add as the portable kernels do
    }
    flops += 100000.0 * 8 * 2;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  volatile float sink = 0.0f;  // the chains' results are used, so they are computed
  for (float x : a) sink = sink + x;
  return flops / elapsed / 1e9;
}

}  // namespace bench
}  // namespace spruce
