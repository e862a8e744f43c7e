// GELU on 8 lanes (AVX2 + FMA): gelu_vec.h's formulas.
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/gelu_vec.h"
#include "kernels/kernels_impl.h"
#include "kernels/vec_avx2.h"

namespace spruce {
namespace kernels {
using vec::Avx2;

void gelu_avx2(const float* x, float* y, size_t n, bool approximate) {
  if (approximate) vec::apply<Avx2, vec::gelu_tanh<Avx2>>(x, y, n);
  else vec::apply<Avx2, vec::gelu<Avx2>>(x, y, n);
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
