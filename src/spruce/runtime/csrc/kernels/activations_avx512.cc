// Sigmoid and swish on 16 lanes (AVX-512), the functions that run over whole
// tensors in the nets that use them (swish after most convs of EfficientNet).
// The same operations as activations_avx2.cc's exp_clamped, sigmoid_ps and
// swish_ps, lane for lane, so the results are the AVX2 version's bits.
// Called only when unary() finds the CPU runs AVX-512.
#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {
namespace {

inline __m512 exp_clamped512(__m512 z) {
  z = _mm512_min_ps(_mm512_set1_ps(88.3f), _mm512_max_ps(_mm512_set1_ps(-87.3f), z));
  const __m512 magic = _mm512_set1_ps(12582912.0f + 127.0f);
  const __m512 biased = _mm512_fmadd_ps(z, _mm512_set1_ps(1.44269504089f), magic);
  const __m512 n = _mm512_sub_ps(biased, magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), z);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(biased), 23)));
}

template <bool kSwish>
inline __m512 gate(__m512 x) {
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_clamped512(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  return _mm512_div_ps(kSwish ? x : _mm512_set1_ps(1.0f), d);
}

template <bool kSwish>
void apply512(const float* x, float* y, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, gate<kSwish>(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, mask, gate<kSwish>(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

}  // namespace

bool unary_avx512(UnaryFn f, const float* x, float* y, size_t n) {
  if (f == UnaryFn::kSigmoid) {
    apply512<false>(x, y, n);
  } else if (f == UnaryFn::kSwish) {
    apply512<true>(x, y, n);
  } else {
    return false;
  }
  return true;
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
