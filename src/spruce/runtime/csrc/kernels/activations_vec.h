// The activation functions that both vector widths run, written once over a
// traits struct V (activations_avx2.cc's 8 lanes, activations_avx512.cc's 16):
// V::Vec, set1, the arithmetic, exponent_bits, and load / store with their tail
// forms. Both files instantiate the same operations in the same order, so the
// AVX-512 results are the AVX2 ones, bit for bit. Include only from those files,
// gelu_vec.h and vec_avx512.h (the AVX-512 traits, which kernels that fuse swish
// into their epilogue use too).
//
// exp(z) splits z into n * ln2 + r with |r| <= ln2 / 2, evaluates e^r by its
// Taylor series and scales by 2^n through the exponent bits.
#pragma once

#include <cstddef>

namespace spruce {
namespace kernels {
namespace vec {

constexpr float kExpMin = -87.3f;  // exp(kExpMin) is about the smallest normal float
constexpr float kLog2e = 1.44269504089f;
constexpr float kLn2Hi = 0.693359375f;  // ln2 in two parts: n * kLn2Hi is exact
constexpr float kLn2Lo = -2.12194440e-4f;

// p(r) = c[0] r^(n-1) + ... + c[n-1] by Horner's rule, one FMA a coefficient.
template <class V, size_t N>
inline typename V::Vec horner(typename V::Vec r, const float (&c)[N]) {
  typename V::Vec p = V::set1(c[0]);
  for (size_t i = 1; i < N; ++i) p = V::fmadd(p, r, V::set1(c[i]));
  return p;
}

// r = z - n * ln2, in two steps so that no bits of r are lost.
template <class V>
inline typename V::Vec reduce_ln2(typename V::Vec z, typename V::Vec n) {
  const typename V::Vec r = V::fnmadd(n, V::set1(kLn2Hi), z);
  return V::fnmadd(n, V::set1(kLn2Lo), r);
}

// exp(z) with z clamped to [kExpMin, 88.3] (results from about the smallest to
// near the largest normal float), in few instructions: sigmoid and swish over
// whole tensors are bound by the vector ports. Adding 1.5 * 2^23 + 127 rounds
// z * log2(e) to an integer n and leaves n + 127 in the low bits, the exponent
// field of 2^n once shifted; the series stops at r^6 (truncation below 1.3e-7).
template <class V>
inline typename V::Vec exp_clamped(typename V::Vec z) {
  z = V::min(V::set1(88.3f), V::max(V::set1(kExpMin), z));  // NaN passes
  const typename V::Vec magic = V::set1(12582912.0f + 127.0f);
  const typename V::Vec biased = V::fmadd(z, V::set1(kLog2e), magic);
  const typename V::Vec r = reduce_ln2<V>(z, V::sub(biased, magic));
  static constexpr float kSeries[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  return V::mul(horner<V>(r, kSeries), V::exponent_bits(biased));
}

// exp(-x), for sigmoid and swish, with x clamped to [-88.3, 87.3] (results from
// about the smallest normal float to near the largest; NaN passes). The
// negation is folded into the reduction: with n = round(-x log2(e)) and
// u = x + n ln2 (so that exp(-x) = 2^n e^-u, |u| <= ln2 / 2),
// e^-u = 1 - u q(-u), where q is a degree-4 minimax fit of (e^t - 1) / t on
// [-ln2/2, ln2/2] with float32 coefficients (relative error 1.4e-7, against
// 1.3e-7 for exp_clamped's degree-6 Taylor series) in two fewer operations,
// which is what counts: sigmoid and swish are bound by the vector ports.
template <class V>
inline typename V::Vec exp_neg(typename V::Vec x) {
  x = V::min(V::set1(87.3f), V::max(V::set1(-88.3f), x));  // NaN passes
  const typename V::Vec magic = V::set1(12582912.0f + 127.0f);
  const typename V::Vec biased = V::fnmadd(x, V::set1(kLog2e), magic);
  const typename V::Vec s = V::exponent_bits(biased);
  const typename V::Vec n = V::sub(biased, magic);
  const typename V::Vec u = V::fmadd(n, V::set1(kLn2Lo), V::fmadd(n, V::set1(kLn2Hi), x));
  // q(t) = c1 + c2 t + c3 t^2 + c4 t^3 + c5 t^4 at t = -u: odd coefficients negated.
  static constexpr float kQ[] = {0.008319168f, -0.041887794f, 0.1666686f, -0.49999258f, 1.0000001f};
  return V::fnmadd(V::mul(u, s), horner<V>(u, kQ), s);
}

// 1 / (1 + exp(-x)): below x = -88.3 the result is under the smallest normal
// float (flushed to 0 in the engine), above x = 87.3 it rounds to 1. Within
// 4 ulps of the exact value wherever that is a normal float. The division stays:
// on this engine's AVX-512 CPUs it costs about what a reciprocal estimate and
// its Newton step do, and unlike the estimate (rcp14 against AVX2's rcp) it
// gives the same bits on both vector widths.
template <class V>
inline typename V::Vec sigmoid(typename V::Vec x) {
  return V::div(V::set1(1.0f), V::add(V::set1(1.0f), exp_neg<V>(x)));
}

// x * sigmoid(x), as x / (1 + exp(-x)): within 4 ulps where the result is a
// normal float and x >= -88.3; below, where exp(x) is far under the smallest
// normal float, within |x| times that float of the exact value.
template <class V>
inline typename V::Vec swish(typename V::Vec x) {
  return V::div(x, V::add(V::set1(1.0f), exp_neg<V>(x)));
}

// y[i] = F(x[i]) for i < n, whole vectors then one masked tail.
template <class V, typename V::Vec (*F)(typename V::Vec)>
void apply(const float* x, float* y, size_t n) {
  size_t i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) V::store(y + i, F(V::load(x + i)));
  if (i < n) V::store_tail(y + i, n - i, F(V::load_tail(x + i, n - i)));
}

}  // namespace vec
}  // namespace kernels
}  // namespace spruce
