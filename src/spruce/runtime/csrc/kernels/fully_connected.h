// Row kernels of FULLY_CONNECTED (ops/dense.cc): y[o] = dot(x, w[o]) + bias[o]
// for o in [o_begin, o_end); w is row-major [outputs][k].
#pragma once

#include <cstdint>

namespace spruce {

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SPRUCE_FC_AVX2 1
void fully_connected_rows_avx2(const float* x, const float* w, const float* bias, float* y, int64_t k,
                               int64_t o_begin, int64_t o_end);
#else
#define SPRUCE_FC_AVX2 0
#endif

}  // namespace spruce
