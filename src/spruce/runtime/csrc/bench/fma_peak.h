// The core's multiply-add throughput, which benchmarks/bench_kernels.py and
// bench_engine.py report the kernels' GFLOP/s against.
#pragma once

#include "kernels/kernels.h"

namespace spruce {
namespace bench {

// Single-thread multiply-add throughput of this core with `isa` in GFLOP/s (2
// flops per lane per FMA), measured by running independent FMA chains for about
// `seconds` with the vectors of the ISA the kernels run (resolve_isa): 512-bit
// FMAs under AVX-512, 256-bit ones under AVX2. The portable ISA measures the
// multiply-adds of plain C++ as this build compiles them.
double fma_peak_gflops(kernels::Isa isa, double seconds);

// The AVX2 and AVX-512 chains (fma_peak_avx2.cc, fma_peak_avx512.cc); only
// called after a CPU check.
double fma_peak_gflops_avx2(double seconds);
double fma_peak_gflops_avx512(double seconds);

}  // namespace bench
}  // namespace spruce
