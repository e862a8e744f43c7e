// Internal to the kernels: per-ISA entry points and helpers shared by the
// portable and AVX2 files. The public API is kernels.h.
#pragma once

#include <algorithm>

#include "kernels/kernels.h"

// x86 GCC/Clang builds compile the *_avx2.cc files with -mavx2 -mfma and the
// *_avx512.cc files with -mavx512f -mavx2 -mfma (see CMakeLists.txt); elsewhere
// they are empty and never referenced.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SPRUCE_X86_KERNELS 1
#else
#define SPRUCE_X86_KERNELS 0
#endif

namespace spruce {
namespace kernels {

// The best ISA up to `requested` that the build and the CPU support. Families
// with an AVX2 kernel take it for any result >= kAvx2.
Isa resolve_isa(Isa requested);

inline float apply_activation(float x, const Activation& act) {
  if (act.hard_swish) x = x * std::min(std::max(x + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
  return std::min(std::max(x, act.min), act.max);
}

#define SPRUCE_DECLARE_ISA_KERNELS(suffix)                                                      \
  void spmm_##suffix(const SparseMatrix& w, const float* bias, const float* input,             \
                     float* output, int64_t out_stride, int32_t n_begin, int32_t n_end,        \
                     int64_t p_begin, int64_t p_end, const Activation& act,                    \
                     bool input_padded, bool output_padded, const float* values,               \
                     const float* group_values, const float* residual,                         \
                     int64_t residual_stride);                                                 \
  void gemm_##suffix(const PackedDense& w, const float* bias, const float* input,              \
                     int64_t in_stride, float* output, int64_t out_stride, int32_t n_begin,    \
                     int32_t n_end, int64_t p_begin, int64_t p_end, const Activation& act,     \
                     const float* residual);                                                   \
  bool dwconv_chw_##suffix(const DwConvParams& p, const float* weights, const float* bias,     \
                           const float* input, float* output, int32_t c_begin, int32_t c_end, \
                           const Activation& act);                                             \
  void conv_hwc2chw_##suffix(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,\
                             const float* input, float* output, int32_t oy_begin,              \
                             int32_t oy_end, const Activation& act);                           \
  void fully_connected_##suffix(const float* x, const float* w, const float* bias, float* y,   \
                                int64_t k, int64_t o_begin, int64_t o_end, const Activation& act);

SPRUCE_DECLARE_ISA_KERNELS(portable)
#if SPRUCE_X86_KERNELS
SPRUCE_DECLARE_ISA_KERNELS(avx2)
void unary_avx2(UnaryFn f, const float* x, float* y, size_t n);
void gelu_avx2(const float* x, float* y, size_t n, bool approximate);
void gelu_avx512(const float* x, float* y, size_t n, bool approximate);
// The families with an AVX-512 version, each giving its AVX2 kernel's bits.
void gemm_avx512(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
                 float* output, int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
                 int64_t p_end, const Activation& act, const float* residual);
// The phased stems (conv_hwc2chw_phased.h); false, doing nothing, for other shapes.
bool conv_hwc2chw_avx512(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias, const float* input,
                         float* output, int32_t oy_begin, int32_t oy_end, const Activation& act);
void spmm_avx512(const SparseMatrix& w, const float* bias, const float* input, float* output, int64_t out_stride,
                 int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end, const Activation& act,
                 const float* values, const float* group_values, const float* residual, int64_t residual_stride);
void spmm_scale_values_avx512(const float* values, const int32_t* cols, const float* scale, float* out, int64_t n);
void spmv_avx512(const float* values, const int32_t* cols, const int64_t* row_ptr, const float* x, float* y,
                 int64_t n_begin, int64_t n_end);
// False, doing nothing, for shapes it leaves to dwconv_chw_avx2 (other kernel
// sizes and strides, narrow outputs). swish: swish after act, as each output
// is stored (dwconv_chw_swish).
bool dwconv_chw_avx512(const DwConvParams& p, const float* weights, const float* bias, const float* input,
                       float* output, int32_t c_begin, int32_t c_end, const Activation& act, bool swish = false);
// Sigmoid and swish only; false, doing nothing, for the other functions.
bool unary_avx512(UnaryFn f, const float* x, float* y, size_t n);
#endif

// Panel sizes shared by packing and every ISA's kernel.
// Output channels per packed dense panel: the AVX-512 kernel's 8-row register
// block reads its weights as one contiguous run (two k per cache line), and the
// AVX2 kernel's 4-row blocks read half of each panel.
constexpr int32_t kGemmPanel = 8;
constexpr int32_t kConvHwcGroup = 8;   // output channels per packed entry-conv group
// Input channels per sparse block: 128 rows x 32 pixels x 4 bytes = 16 KiB of
// input per tile, half of a typical L1D.
constexpr int32_t kSpmmKBlock = 128;
// Up to this many input channels the AVX2 sparse kernel uses 64-pixel tiles
// with one accumulator set: with few input rows the per-row cost outweighs the
// L1 misses of the larger input tile.
constexpr int32_t kSpmmWideTileMaxCols = 128;
// Pixels per AVX2 sparse tile: 64 with one accumulator set (few input
// channels), else 32 with two; a range up to kSpmmPairedSinglePass pixels (a
// 7x7 image) runs as one tile of up to 7 vectors.
constexpr int64_t kSpmmWideTile = 64;
constexpr int64_t kSpmmPairedTile = 32;
constexpr int64_t kSpmmPairedSinglePass = 56;
// Target width of copied input tiles for matrices with many input channels
// (spmm_input_tile), the image cut into equal tiles near that width: wide
// enough to amortise each pass over the weights, narrow enough that a
// k-block's tile of input rows stays in L1.
constexpr int64_t kSpmmPackedTile = 48;
// Row groups (SparseMatrix::group_rows, kSpmmGroupRows in kernels.h). Their
// AVX2 kernel holds 4 rows x 3 vectors of sums, loads 3 input vectors and 4
// weights per entry and does 12 FMAs: FMA-bound, where the unstructured kernel
// is bound by one input load per FMA. Matrices use it when at least this share
// of their group entries' weights is nonzero (a zero costs a wasted FMA).
// Matrices with fewer than kSpmmGroupMinCols input channels stay on CSR: with
// a few entries per group, the groups' 24-pixel tiles are bound by writing the
// output, which the 64-pixel CSR tiles do faster.
constexpr double kSpmmGroupMinFill = 0.8;
// AVX-512 sparse tile plan (spmm_input_tile, spmm_avx512.cc). Passes over a
// range hold at most this many 16-pixel vectors: paired mode 4 (8
// accumulators, a k-block's 64-pixel slice of input in L1), one accumulator
// set 8, row groups 3 (4 rows x 3 accumulators). Copied tiles are a whole
// plane padded to 16 floats up to kSpmm512WholeImage pixels (14x14, 7x7),
// else kSpmm512WideTile pixels (one accumulator set) or about
// kSpmm512PairedTile (paired mode, cut into equal whole-vector tiles).
constexpr int kSpmm512PairedVectors = 4;
constexpr int kSpmm512SingleVectors = 8;
constexpr int kSpmm512GroupVectors = 3;
constexpr int64_t kSpmm512WholeImage = 256;
constexpr int64_t kSpmm512WideTile = 128;
constexpr int64_t kSpmm512PairedTile = 112;
// Rows ahead whose output lines the AVX-512 sparse kernel prefetches for
// writing when output rows are a page or more apart (spmm_avx512.cc).
constexpr int kSpmm512PrefetchRows = 4;
// The AVX-512 depthwise kernel runs outputs at least this wide (5x5; 3x3 at
// stride 2; 3x3 at stride 1); narrower ones take the AVX2 kernel.
constexpr int32_t kDw512MinOutW5 = 14;
constexpr int32_t kDw512MinOutW3S2 = 28;
constexpr int32_t kDw512MinOutW3S1 = 56;
constexpr int32_t kSpmmGroupMinCols = 64;

}  // namespace kernels
}  // namespace spruce
