// Run-time ISA selection for the kernels.
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

bool cpu_has_avx2() {
#if SPRUCE_X86_KERNELS
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

Isa default_isa() {
  static const Isa isa = [] {
    const char* env = std::getenv("SPRUCE_KERNELS_ISA");
    if (env != nullptr && std::strcmp(env, "portable") == 0) return Isa::kPortable;
    return cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
  }();
  return isa;
}

Isa resolve_isa(Isa requested) {
  return (requested == Isa::kAvx2 && cpu_has_avx2()) ? Isa::kAvx2 : Isa::kPortable;
}

const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "portable"; }

double fma_peak_gflops(Isa isa, double seconds) {
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) == Isa::kAvx2) return fma_peak_gflops_avx2(seconds);
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

}  // namespace kernels
}  // namespace spruce
