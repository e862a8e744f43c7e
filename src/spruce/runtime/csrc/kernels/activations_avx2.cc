// Activation functions on 8 lanes (AVX2 + FMA). exp(z) for z <= 0 splits z
// into n * ln2 + r with |r| <= ln2 / 2, evaluates e^r by its Taylor series to
// r^7 (truncation below 1e-8) and scales by 2^n through the exponent bits;
// arguments below -87.3 (results under the smallest normal float) give 0.
// Where exp(z) - 1 or 1 - exp(z) would cancel (small |x| in ELU and tanh) a
// series in x replaces it, so the relative error stays a few ulp everywhere.
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/kernels.h"
#include "kernels/simd_avx2.h"

namespace spruce {
namespace kernels {
namespace {

constexpr float kExpMin = -87.3f;  // exp(kExpMin) is about the smallest normal float

// exp(z) for z <= 0; 0 below kExpMin; NaN stays NaN.
inline __m256 exp_nonpositive(__m256 z) {
  const __m256 underflow = _mm256_cmp_ps(z, _mm256_set1_ps(kExpMin), _CMP_LT_OQ);
  z = _mm256_max_ps(_mm256_set1_ps(kExpMin), z);  // NaN in z passes through
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(1.44269504089f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), z);  // ln2 in two parts: exact n * hi
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

// exp(z) with z clamped to [kExpMin, 88.3] (results from about the smallest to
// near the largest normal float), in fewer instructions than exp_nonpositive:
// sigmoid and swish over whole tensors are bound by the vector ports. Adding 1.5 * 2^23 + 127 rounds z * log2(e) to an integer
// n and leaves n + 127 in the low bits, the exponent field of 2^n once shifted;
// the series stops at r^6 (truncation below 1.3e-7).
inline __m256 exp_clamped(__m256 z) {
  z = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(kExpMin), z));  // NaN passes
  const __m256 magic = _mm256_set1_ps(12582912.0f + 127.0f);
  const __m256 biased = _mm256_fmadd_ps(z, _mm256_set1_ps(1.44269504089f), magic);
  const __m256 n = _mm256_sub_ps(biased, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), z);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(biased), 23)));
}

inline __m256 abs_ps(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

// 1 / (1 + exp(-x)): below x = -88.3 the result is under the smallest normal
// float (flushed to 0 in the engine), above x = 87.3 it rounds to 1.
inline __m256 sigmoid_ps(__m256 x) {
  const __m256 e = exp_clamped(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

inline __m256 tanh_ps(__m256 x) {
  const __m256 a = abs_ps(x);
  // |x| >= 0.3: (1 - e) / (1 + e) with e = exp(-2|x|) >= 0.55 at most, no cancellation.
  const __m256 e = exp_nonpositive(_mm256_mul_ps(a, _mm256_set1_ps(-2.0f)));
  const __m256 big = _mm256_div_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), e), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  // |x| < 0.3: the odd series to x^9 (next term below 2e-8 relative).
  const __m256 a2 = _mm256_mul_ps(a, a);
  __m256 p = _mm256_set1_ps(62.0f / 2835);
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(-17.0f / 315));
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(2.0f / 15));
  p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(-1.0f / 3));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, a2), a, a);
  const __m256 t = _mm256_blendv_ps(big, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.3f), _CMP_LT_OQ));
  return _mm256_or_ps(t, _mm256_and_ps(x, _mm256_set1_ps(-0.0f)));  // x's sign
}

inline __m256 elu_ps(__m256 x) {
  // x <= -0.3: exp(x) - 1 (exp(x) <= 0.75, no cancellation); -0.3 < x <= 0: the series to x^7.
  const __m256 big = _mm256_sub_ps(exp_nonpositive(_mm256_min_ps(_mm256_setzero_ps(), x)), _mm256_set1_ps(1.0f));
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(0.5f));
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

inline __m256 swish_ps(__m256 x) {
  const __m256 e = exp_clamped(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

template <__m256 (*F)(__m256)>
void apply(const float* x, float* y, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, F(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i mask = avx2::tail_mask(static_cast<int>(n - i));
    _mm256_maskstore_ps(y + i, mask, F(_mm256_maskload_ps(x + i, mask)));
  }
}

}  // namespace

void unary_avx2(UnaryFn f, const float* x, float* y, size_t n) {
  switch (f) {
    case UnaryFn::kSigmoid: apply<sigmoid_ps>(x, y, n); break;
    case UnaryFn::kTanh: apply<tanh_ps>(x, y, n); break;
    case UnaryFn::kElu: apply<elu_ps>(x, y, n); break;
    case UnaryFn::kHardSwish: apply<hard_swish_ps>(x, y, n); break;
    case UnaryFn::kSwish: apply<swish_ps>(x, y, n); break;
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
