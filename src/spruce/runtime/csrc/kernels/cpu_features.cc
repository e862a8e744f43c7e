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

}  // namespace kernels
}  // namespace spruce
