// GELU on 16 lanes (AVX-512): gelu_vec.h's formulas, as gelu_avx2.cc runs them.
#if defined(__AVX512F__) && defined(__FMA__)
#include "kernels/gelu_vec.h"
#include "kernels/kernels_impl.h"
#include "kernels/vec_avx512.h"

namespace spruce {
namespace kernels {
using vec::Avx512;

void gelu_avx512(const float* x, float* y, size_t n, bool approximate) {
  if (approximate) vec::apply<Avx512, vec::gelu_tanh<Avx512>>(x, y, n);
  else vec::apply<Avx512, vec::gelu<Avx512>>(x, y, n);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
