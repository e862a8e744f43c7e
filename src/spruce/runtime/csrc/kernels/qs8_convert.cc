// float32 -> int8 quantization (QUANTIZE), portable and dispatch.
#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

#if SPRUCE_X86_KERNELS
void qs8_quantize_avx512(const float* x, int8_t* y, int64_t n, float inverse_scale, int32_t zero_point);
#endif

void qs8_quantize(const float* x, int8_t* y, int64_t n, float inverse_scale, int32_t zero_point, Isa isa) {
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) == Isa::kAvx512 && cpu_has_avx512_vnni()) {
    return qs8_quantize_avx512(x, y, n, inverse_scale, zero_point);
  }
#endif
  const float lo = static_cast<float>(-128 - zero_point), hi = static_cast<float>(127 - zero_point);
  // Adding and subtracting 1.5 * 2^23 rounds |f| < 2^22 to nearest even (as
  // XNNPACK's magic-bias kernels do).
  const float magic = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) {
    float f = x[i] * inverse_scale;
    f = f > lo ? f : lo;  // NaN becomes lo
    f = f < hi ? f : hi;
    y[i] = static_cast<int8_t>(static_cast<int32_t>((f + magic) - magic) + zero_point);
  }
}

}  // namespace kernels
}  // namespace spruce
