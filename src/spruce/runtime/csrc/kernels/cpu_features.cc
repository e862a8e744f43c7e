// Run-time ISA selection for the kernels.
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

bool cpu_has_avx512() {
#if SPRUCE_X86_KERNELS
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f");
  }();
  return has;
#else
  return false;
#endif
}

namespace {

Isa best_isa() {
  if (cpu_has_avx512()) return Isa::kAvx512;
  return cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
}

}  // namespace

Isa default_isa() {
  static const Isa isa = [] {
    const char* env = std::getenv("SPRUCE_KERNELS_ISA");
    if (env != nullptr && std::strcmp(env, "portable") == 0) return Isa::kPortable;
    if (env != nullptr && std::strcmp(env, "avx2") == 0) return resolve_isa(Isa::kAvx2);
    return best_isa();
  }();
  return isa;
}

Isa resolve_isa(Isa requested) { return std::min(requested, best_isa()); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace kernels
}  // namespace spruce
