// GELU written once over a traits struct V (gelu_avx2.cc's 8 lanes,
// gelu_avx512.cc's 16), on activations_vec.h's exp and sigmoid: V also needs
// select_negative(x, a, b), a where x < 0 and b elsewhere. Include only from
// those files.
//
// The erf form is x * Phi(x) with Phi from erfc(|x| / sqrt 2) = t exp(P(t) - z^2),
// t = 1 / (1 + z / 2) (the Chebyshev fit of Numerical Recipes' erfcc, relative
// error under 1.2e-7 everywhere): for x < 0, Phi = erfc / 2 directly, so the small
// values of the negative side keep their relative accuracy; for x >= 0, 1 - erfc / 2.
// The tanh form 0.5 x (1 + tanh(u)) is x * sigmoid(2u), without the cancellation
// of 1 + tanh(u) for negative u.
#pragma once

#include "kernels/activations_vec.h"

namespace spruce {
namespace kernels {
namespace vec {

constexpr float kGeluErfc[] = {0.17087277f,  -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                               -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};

template <class V>
inline typename V::Vec gelu(typename V::Vec x) {
  using Vec = typename V::Vec;
  const Vec z = V::mul(V::max(x, V::sub(V::zero(), x)), V::set1(0.70710678118654752f));
  const Vec t = V::div(V::set1(1.0f), V::fmadd(z, V::set1(0.5f), V::set1(1.0f)));
  const Vec p = V::fnmadd(z, z, horner<V>(t, kGeluErfc));
  const Vec half_erfc = V::mul(V::mul(t, V::set1(0.5f)), exp_clamped<V>(p));
  const Vec phi = V::select_negative(x, half_erfc, V::sub(V::set1(1.0f), half_erfc));
  return V::mul(x, phi);
}

template <class V>
inline typename V::Vec gelu_tanh(typename V::Vec x) {
  using Vec = typename V::Vec;
  const Vec x3 = V::mul(V::mul(x, x), x);
  const Vec two_u = V::mul(V::fmadd(x3, V::set1(0.044715f), x), V::set1(2.0f * 0.79788456080286536f));
  return V::mul(x, sigmoid<V>(two_u));
}

}  // namespace vec
}  // namespace kernels
}  // namespace spruce
