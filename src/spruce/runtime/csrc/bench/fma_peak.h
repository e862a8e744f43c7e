// The core's multiply-add throughput, which benchmarks/bench_kernels.py and
// bench_engine.py report the kernels' GFLOP/s against.
#pragma once

#include "kernels/kernels.h"

namespace spruce {
namespace bench {

// Single-thread multiply-add throughput of this core with `isa` in GFLOP/s (2
// flops per lane per FMA), measured by running independent FMA chains for about
// `seconds`. The portable ISA measures the multiply-adds of plain C++ as this
// build compiles them.
double fma_peak_gflops(kernels::Isa isa, double seconds);

// The AVX2 chains (fma_peak_avx2.cc); only called after a CPU check.
double fma_peak_gflops_avx2(double seconds);

}  // namespace bench
}  // namespace spruce
