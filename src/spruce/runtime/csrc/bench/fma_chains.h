// Independent FMA chains of one vector type, timed: the loop behind
// fma_peak_avx2.cc and fma_peak_avx512.cc, each compiled with its ISA's flags
// and instantiating it with its own vector operations.
#pragma once

#include <chrono>

namespace spruce {
namespace bench {

// Multiply-add throughput in GFLOP/s of `Ops` vectors (Ops::V with kLanes
// floats; set1, fmadd, add, sum), measured for about `seconds`. Twelve chains:
// 2 FMA pipes x 4-6 cycles of latency need at most 12 in flight, so only the
// pipes limit the loop.
template <typename Ops>
double fma_chain_gflops(double seconds) {
  using V = typename Ops::V;
  constexpr int kChains = 12;
  const V m = Ops::set1(0.9999f), c = Ops::set1(1e-5f);
  V a[kChains];
  // Distinct starting values keep the compiler from merging the chains.
  for (int i = 0; i < kChains; ++i) a[i] = Ops::set1(0.01f * static_cast<float>(i + 1));
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0, flops = 0.0;
  while (elapsed < seconds) {
    for (int r = 0; r < 100000; ++r) {
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) a[i] = Ops::fmadd(a[i], m, c);
    }
    flops += 100000.0 * kChains * Ops::kLanes * 2;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  // The chains' results are used, so the compiler keeps every FMA.
  V total = a[0];
  for (int i = 1; i < kChains; ++i) total = Ops::add(total, a[i]);
  volatile float sink = Ops::sum(total);
  (void)sink;
  return flops / elapsed / 1e9;
}

}  // namespace bench
}  // namespace spruce
