// Activation functions on 8 lanes (AVX2 + FMA): sigmoid and swish from
// activations_vec.h (shared with AVX-512), and tanh, ELU and hard-swish here.
// exp(z) for z <= 0 evaluates e^r by its Taylor series to r^7 (truncation below
// 1e-8); arguments below -87.3 (results under the smallest normal float) give 0.
// Where exp(z) - 1 or 1 - exp(z) would cancel (small |x| in ELU and tanh) a
// series in x replaces it, so the relative error stays a few ulp everywhere.
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/activations_vec.h"
#include "kernels/kernels.h"
#include "kernels/simd_avx2.h"
#include "kernels/vec_avx2.h"

namespace spruce {
namespace kernels {
using vec::Avx2;

namespace {

// exp(z) for z <= 0; 0 below kExpMin; NaN stays NaN.
inline __m256 exp_nonpositive(__m256 z) {
  const __m256 underflow = _mm256_cmp_ps(z, _mm256_set1_ps(vec::kExpMin), _CMP_LT_OQ);
  z = _mm256_max_ps(_mm256_set1_ps(vec::kExpMin), z);  // NaN in z passes through
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(vec::kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = vec::reduce_ln2<Avx2>(z, n);
  static constexpr float kSeries[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  const __m256 p = vec::horner<Avx2>(r, kSeries);
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

inline __m256 abs_ps(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

inline __m256 tanh_ps(__m256 x) {
  const __m256 a = abs_ps(x);
  // |x| >= 0.3: (1 - e) / (1 + e) with e = exp(-2|x|) >= 0.55 at most, no cancellation.
  const __m256 e = exp_nonpositive(_mm256_mul_ps(a, _mm256_set1_ps(-2.0f)));
  const __m256 big = _mm256_div_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), e), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  // |x| < 0.3: the odd series to x^9 (next term below 2e-8 relative).
  const __m256 a2 = _mm256_mul_ps(a, a);
  static constexpr float kSeries[] = {62.0f / 2835, -17.0f / 315, 2.0f / 15, -1.0f / 3};
  const __m256 p = vec::horner<Avx2>(a2, kSeries);
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, a2), a, a);
  const __m256 t = _mm256_blendv_ps(big, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.3f), _CMP_LT_OQ));
  return _mm256_or_ps(t, _mm256_and_ps(x, _mm256_set1_ps(-0.0f)));  // x's sign
}

inline __m256 elu_ps(__m256 x) {
  // x <= -0.3: exp(x) - 1 (exp(x) <= 0.75, no cancellation); -0.3 < x <= 0: the series to x^7.
  const __m256 big = _mm256_sub_ps(exp_nonpositive(_mm256_min_ps(_mm256_setzero_ps(), x)), _mm256_set1_ps(1.0f));
  static constexpr float kSeries[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f};
  const __m256 p = vec::horner<Avx2>(x, kSeries);
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x), x, x);
  const __m256 neg = _mm256_blendv_ps(big, small, _mm256_cmp_ps(x, _mm256_set1_ps(-0.3f), _CMP_GT_OQ));
  return _mm256_blendv_ps(neg, x, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ));
}

inline __m256 hard_swish_ps(__m256 x) {
  // The portable loop's operations in its order, so both give the same bits.
  __m256 r = _mm256_add_ps(x, _mm256_set1_ps(3.0f));
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
  return _mm256_div_ps(_mm256_mul_ps(x, r), _mm256_set1_ps(6.0f));
}

}  // namespace

void unary_avx2(UnaryFn f, const float* x, float* y, size_t n) {
  switch (f) {
    case UnaryFn::kSigmoid: vec::apply<Avx2, vec::sigmoid<Avx2>>(x, y, n); break;
    case UnaryFn::kTanh: vec::apply<Avx2, tanh_ps>(x, y, n); break;
    case UnaryFn::kElu: vec::apply<Avx2, elu_ps>(x, y, n); break;
    case UnaryFn::kHardSwish: vec::apply<Avx2, hard_swish_ps>(x, y, n); break;
    case UnaryFn::kSwish: vec::apply<Avx2, vec::swish<Avx2>>(x, y, n); break;
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
