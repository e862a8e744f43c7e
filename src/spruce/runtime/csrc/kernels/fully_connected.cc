// Fully connected rows (row-major weights): portable kernel and dispatch.
#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

namespace {

// Eight partial sums, so the compiler vectorises the loop on any ISA.
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void fully_connected_portable(const float* x, const float* w, const float* bias, float* y, int64_t k,
                              int64_t o_begin, int64_t o_end, const Activation& act) {
  for (int64_t o = o_begin; o < o_end; ++o) {
    const float b = bias != nullptr ? bias[o] : 0.0f;
    y[o] = apply_activation(dot(x, w + o * k, k) + b, act);
  }
}

void fully_connected(const float* x, const float* w, const float* bias, float* y, int64_t k,
                     int64_t o_begin, int64_t o_end, const Activation& act, Isa isa) {
  if (o_begin >= o_end) return;
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) >= Isa::kAvx2) {
    fully_connected_avx2(x, w, bias, y, k, o_begin, o_end, act);
    return;
  }
#endif
  fully_connected_portable(x, w, bias, y, k, o_begin, o_end, act);
}

}  // namespace kernels
}  // namespace spruce
