// Fully connected rows with AVX2 + FMA: four weight rows per pass, so each
// load of x serves four. Compiled with -mavx2 -mfma (see CMakeLists.txt);
// called only after a CPU check.
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/simd_avx2.h"

namespace spruce {
namespace kernels {

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

inline float bias_at(const float* bias, int64_t o) { return bias != nullptr ? bias[o] : 0.0f; }

}  // namespace

void fully_connected_avx2(const float* x, const float* w, const float* bias, float* y, int64_t k,
                          int64_t o_begin, int64_t o_end, const Activation& act) {
  int64_t o = o_begin;
  for (; o + 4 <= o_end; o += 4) {
    const float* w0 = w + o * k;
    const float* w1 = w0 + k;
    const float* w2 = w1 + k;
    const float* w3 = w2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
      __m256 xv = _mm256_loadu_ps(x + i);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
    }
    float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
    for (; i < k; ++i) {
      s0 += w0[i] * x[i];
      s1 += w1[i] * x[i];
      s2 += w2[i] * x[i];
      s3 += w3[i] * x[i];
    }
    y[o] = apply_activation(s0 + bias_at(bias, o), act);
    y[o + 1] = apply_activation(s1 + bias_at(bias, o + 1), act);
    y[o + 2] = apply_activation(s2 + bias_at(bias, o + 2), act);
    y[o + 3] = apply_activation(s3 + bias_at(bias, o + 3), act);
  }
  for (; o < o_end; ++o) {
    const float* wr = w + o * k;
    __m256 a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(wr + i), _mm256_loadu_ps(x + i), a);
    float s = hsum(a);
    for (; i < k; ++i) s += wr[i] * x[i];
    y[o] = apply_activation(s + bias_at(bias, o), act);
  }
}

}  // namespace kernels
}  // namespace spruce

#endif  // __AVX2__ && __FMA__
