// Global average pooling over the pixels of each channel in CHW.
#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

void global_avg_pool_chw(const float* input, int64_t pixels, int64_t stride, float* output,
                         int32_t c_begin, int32_t c_end, Isa isa) {
  // Eight partial sums, so the compiler vectorises the loop on any ISA.
  const float scale = pixels > 0 ? 1.0f / static_cast<float>(pixels) : 0.0f;
  for (int32_t c = c_begin; c < c_end; ++c) {
    const float* x = input + c * stride;
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= pixels; p += 8) {
      for (int i = 0; i < 8; ++i) part[i] += x[p + i];
    }
    float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; p < pixels; ++p) sum += x[p];
    output[c] = sum * scale;
  }
}

}  // namespace kernels
}  // namespace spruce
