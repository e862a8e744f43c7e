// Sigmoid and swish on 16 lanes (AVX-512), the functions that run over whole
// tensors in the nets that use them (swish after most convs of EfficientNet):
// activations_vec.h's, as the AVX2 kernels run them, so the results are the
// AVX2 version's bits. Called only when unary() finds the CPU runs AVX-512.
#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include "kernels/kernels_impl.h"
#include "kernels/vec_avx512.h"

namespace spruce {
namespace kernels {
using vec::Avx512;

bool unary_avx512(UnaryFn f, const float* x, float* y, size_t n) {
  if (f == UnaryFn::kSigmoid) {
    vec::apply<Avx512, vec::sigmoid<Avx512>>(x, y, n);
  } else if (f == UnaryFn::kSwish) {
    vec::apply<Avx512, vec::swish<Avx512>>(x, y, n);
  } else {
    return false;
  }
  return true;
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
