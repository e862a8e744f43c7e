// int8 fully connected layer (one row of inputs against row-major weights).
#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

#if SPRUCE_X86_KERNELS
void qs8_fully_connected_avx512(const uint8_t* x, const int8_t* w, const int32_t* bias, const float* scale,
                                const QS8Output& out, int8_t* y, int64_t k, int64_t o_begin, int64_t o_end);
#endif

void qs8_fully_connected(const uint8_t* x, const int8_t* w, const int32_t* bias, const float* scale,
                         const QS8Output& out, int8_t* y, int64_t k, int64_t o_begin, int64_t o_end, Isa isa) {
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) == Isa::kAvx512 && cpu_has_avx512_vnni()) {
    return qs8_fully_connected_avx512(x, w, bias, scale, out, y, k, o_begin, o_end);
  }
#endif
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int8_t* row = w + o * k;
    int32_t acc = bias[o];
    for (int64_t i = 0; i < k; ++i) acc += static_cast<int32_t>(row[i]) * static_cast<int32_t>(x[i]);
    y[o] = qs8_requantize(acc, scale[o], out.lo, out.hi, out.zero_point);
  }
}

}  // namespace kernels
}  // namespace spruce
