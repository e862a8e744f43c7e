// Hot, layout-specific kernels of spruce's engine (batch 1, float32).
//
// Layout: CHW means [channels][pixels] with the pixels of one channel contiguous
// (row-major H x W). A "stride" below is the distance in floats between two
// channels (normally H*W).
//
// Every kernel takes an explicit work range so a thread pool can split it; the
// ranges of one call may be cut into parts run in any order or in parallel, and
// the parts give bit-identical results to the whole. Kernels never allocate.
// Preconditions (shapes, ranges, buffer sizes) are the caller's: the kernels do
// not check them (the Python bindings in bindings/kernels.cc do).
//
// Each kernel exists in a portable version and, on x86, an AVX2+FMA version
// (files *_avx2.cc); some also have an AVX-512 version (*_avx512.cc) that gives
// the AVX2 version's bits. The `isa` argument picks one; the default is the
// best the CPU supports (see default_isa()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace spruce {
namespace kernels {

// ---------------------------------------------------------------- dispatch --

// Ordered: each ISA's CPU runs every lower one's kernels. Under kAvx512, the
// families without an AVX-512 version run their AVX2 kernel.
enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// True when this build has AVX2 kernels and the CPU runs AVX2 and FMA.
bool cpu_has_avx2();
// True when cpu_has_avx2() and the CPU also runs AVX-512F.
bool cpu_has_avx512();
// The ISA used by default: the best the CPU runs. The environment variable
// SPRUCE_KERNELS_ISA=portable|avx2|avx512 (read once) caps it at that ISA.
// Asking for an ISA the CPU lacks falls back to the best one below it (never
// crashes).
Isa default_isa();
const char* isa_name(Isa isa);

// -------------------------------------------------------------- activation --

// Fused epilogue: y = clamp(hard_swish ? x * min(max(x + 3, 0), 6) / 6 : x,
//                           min, max).
// NONE: defaults. RELU: min=0. RELU6: min=0,max=6. RELU_N1_TO_1: min=-1,max=1.
struct Activation {
  float min = -std::numeric_limits<float>::infinity();
  float max = std::numeric_limits<float>::infinity();
  bool hard_swish = false;
};

// -------------------------------------------------- 1. sparse 1x1 conv (SpMM) --

// Output channels per row group (SparseMatrix::group_rows).
constexpr int32_t kSpmmGroupRows = 4;

// out[n][p] = act(bias[n] + sum_k W[n][k] * in[k][p])
// W is compressed per output channel (CSR) within blocks of k_block input
// channels, so the kernel's tile of input rows stays in L1 (the kernel runs the
// blocks one after the other, keeping partial sums in the output). The input
// offsets are byte offsets (k * in_stride * sizeof(float)), so a matrix is
// packed for one input stride.
struct SparseMatrix {
  int32_t rows = 0;            // N, output channels
  int32_t cols = 0;            // K, input channels
  int64_t in_stride = 0;       // floats between input channels the offsets assume
  int32_t k_block = 0;         // input channels per block
  int32_t blocks = 0;          // ceil(cols / k_block), at least 1
  // [blocks][N + 1]: nonzeros of row n in block b are
  // [row_ptr[b * (N + 1) + n], row_ptr[b * (N + 1) + n + 1]).
  std::vector<int32_t> row_ptr;
  std::vector<float> values;         // [nnz] nonzero weights, increasing k within a row and block
  std::vector<int32_t> byte_offset;  // [nnz] k * in_stride * sizeof(float)
  // Row groups: when block pruning kept or dropped whole runs of
  // kSpmmGroupRows consecutive output channels together (prune_low_magnitude
  // with block_size=(1, 4) on a 1x1 conv), each group of rows shares one
  // pattern of input channels, and the AVX2 kernel loads each input vector once
  // for the group's rows instead of once per row. group_rows is kSpmmGroupRows
  // when pack_sparse found that structure, else 0. Group g of block b has
  // entries [group_ptr[b * (G + 1) + g], ... + 1) (G = rows / group_rows), each
  // an input row (group_offset, like byte_offset) and group_rows weights
  // (group_values, row-major; a zero where one row lacks the input channel).
  // The CSR arrays above stay: other ISAs and rows outside whole groups use them.
  int32_t group_rows = 0;
  std::vector<int32_t> group_ptr;
  std::vector<int32_t> group_offset;
  std::vector<float> group_values;
  int64_t nnz() const { return static_cast<int64_t>(values.size()); }
};

// Packs a dense row-major [rows][cols] matrix; exact zeros are dropped. Rows
// also get the group layout when groups of kSpmmGroupRows rows share their
// patterns well enough (kSpmmGroupMinFill of the group entries' weights nonzero)
// and have at least kSpmmGroupMinCols columns.
// Throws std::invalid_argument if cols * in_stride * 4 does not fit in int32.
SparseMatrix pack_sparse(const float* dense, int32_t rows, int32_t cols, int64_t in_stride);

// The same matrix for inputs `in_stride` floats apart (offsets rescaled).
// Throws std::invalid_argument if cols * in_stride * 4 does not fit in int32.
void set_in_stride(SparseMatrix& m, int64_t in_stride);

// How a caller should feed spmm a matrix of `cols` input channels on images of
// `pixels`: 0 means in place; T > 0 means copy the image tile by tile (tiles of T
// pixels, the last one shorter) into [cols][T] scratch aligned to 64 bytes and
// call spmm once per tile. Tiles run in one pass over the weights each and their
// rows never split a vector load across cache lines, which pays for the copy
// when the matrix has many input channels or the image's channel planes are not
// a multiple of 16 floats (14x14, 7x7).
// Under AVX-512 the tiles are whole 16-float vectors (planes up to 256 pixels
// one tile), as its kernel splits a range into passes itself.
int64_t spmm_input_tile(int32_t cols, int64_t pixels, Isa isa = default_isa());

// n floats rounded up to whole 8-float vectors: how far spmm reads a range of
// n pixels with input_padded, and the plane / tile widths that allow it.
constexpr int64_t whole_vectors(int64_t n) { return (n + 7) / 8 * 8; }

// Rows [n_begin, n_end), pixels [p_begin, p_end). bias may be null (zero).
// input: [K][in_stride] (w.in_stride), output: [N][out_stride].
// input_padded: every input row may be read up to p_begin + (p_end - p_begin)
// rounded up to a multiple of 8 pixels (a packed tile); the extra lanes are
// computed and dropped, so the last vector loads without a mask (masked loads
// are slow). The output rows' partial sums are then read as far too (the
// engine's arena leaves slack after every tensor).
// output_padded: every output row may also be written that far (junk in the
// extra lanes), so the last vector stores without a mask; masked stores are
// slower still.
// values, group_values: null for the matrix's own nonzeros (w.values,
// w.group_values), or arrays of the same sizes to multiply by instead, in the
// same order: the matrix scaled per input channel (spmm_scale_values).
// residual: null, or [N][residual_stride] floats added to each finished sum
// before the activation (a fused residual ADD, the ADD's bits), read only over
// the range (the last vector under a mask, whatever the padding flags say).
void spmm(const SparseMatrix& w, const float* bias, const float* input, float* output,
          int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin, int64_t p_end,
          const Activation& act, Isa isa = default_isa(), bool input_padded = false,
          bool output_padded = false, const float* values = nullptr, const float* group_values = nullptr,
          const float* residual = nullptr, int64_t residual_stride = 0);

// The input channel of each weight of w: w.nnz() entries for w.values, then
// one per element of w.group_values (its entry's channel), the order
// spmm_scale_values takes them in.
std::vector<int32_t> spmm_value_columns(const SparseMatrix& w);

// out[j] = values[j] * scale[cols[j]] for j < n: the weights of W diag(scale),
// so that spmm computes W (scale * x) with the per-channel multiply folded
// into its weights (a squeeze-and-excite block's channel scale, fused into
// the 1x1 conv that reads the scaled tensor). Every ISA rounds each product
// once, so all give the same bits.
void spmm_scale_values(const float* values, const int32_t* cols, const float* scale, float* out, int64_t n,
                       Isa isa = default_isa());

// Sparse matrix times vector: y[n] = sum over row n's nonzeros j of
// values[j] * x[cols[j]], rows [n_begin, n_end) of a plain CSR matrix (row n's
// nonzeros are [row_ptr[n], row_ptr[n + 1])). The 1x1 convs on a 1x1 image
// (squeeze-and-excite, classifier heads). The portable and AVX2 ISAs keep four
// partial sums (nonzero j into sum j % 4); AVX-512 gathers 16 inputs at a time
// into 16 lanes of sums, a few ulps from those.
void spmv(const float* values, const int32_t* cols, const int64_t* row_ptr, const float* x, float* y,
          int64_t n_begin, int64_t n_end, Isa isa = default_isa());

// ------------------------------------------ 2. dense 1x1 conv in CHW (GEMM) --
//
// out[n][p] = act(bias[n] + sum_k W[n][k] * in[k][p] + residual[n][p]).
// Weights packed once (layout private to gemm*.cc: panels of output channels,
// zero padded).
struct PackedDense {
  int32_t rows = 0;  // N
  int32_t cols = 0;  // K
  int32_t panel = 0; // output channels per panel
  std::vector<float> data;
};

PackedDense pack_dense(const float* dense, int32_t rows, int32_t cols);

// Rows [n_begin, n_end), pixels [p_begin, p_end). input: [K][in_stride],
// output: [N][out_stride]. For the best speed split rows at multiples of
// PackedDense::panel (any split is correct).
//
// residual: null, or a tensor laid out like the output (element [n][p] at
// residual + n * out_stride + p), added to each sum before the activation: a
// residual ADD (ResNet's skip connection) fused into the conv that produces
// one of its operands, so the sum never makes a round trip through memory.
// The result is the bits of the conv, then the ADD with the activation.
// Other conv kernels adopt the same epilogue input: the pointer to the skip
// tensor, indexed exactly like their output, read once as each output vector
// is stored.
void gemm(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
          float* output, int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
          int64_t p_end, const Activation& act, const float* residual, Isa isa = default_isa());
inline void gemm(const PackedDense& w, const float* bias, const float* input, int64_t in_stride,
                 float* output, int64_t out_stride, int32_t n_begin, int32_t n_end, int64_t p_begin,
                 int64_t p_end, const Activation& act, Isa isa = default_isa()) {
  gemm(w, bias, input, in_stride, output, out_stride, n_begin, n_end, p_begin, p_end, act, nullptr, isa);
}

// ------------------------------------------------ 3. depthwise conv in CHW --
//
// out[c][oy][ox] = act(bias[c] + sum_{ky,kx} W[c][ky][kx] *
//                      in[c][oy*stride + ky - pad_top][ox*stride + kx - pad_left])
// with zeros outside the input. kernel_size 3 or 5 takes the fast path, any
// other size a generic one; stride 1 or 2 (fast), any (generic).
// out_h = (in_h + pad_top + pad_bottom - k) / stride + 1, same for width.
// weights: [C][k][k]. input: [C][in_h*in_w], output: [C][out_h*out_w].
// out_stride: floats between output planes, 0 for out_h * out_w (back to
// back). A larger one leaves a gap after each plane that the plane's last
// vector may fill with junk (the engine pads 14x14 planes to 200 floats so the
// sparse 1x1 conv after reads whole vectors in place).
// in_stride: floats between input planes, 0 for in_h * in_w; the gaps are
// never used (the sparse 1x1 conv before may have left junk there).
struct DwConvParams {
  int32_t in_h = 0, in_w = 0;
  int32_t kernel = 3, stride = 1;
  int32_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t in_stride = 0, out_stride = 0;
  int32_t out_h() const { return (in_h + pad_top + pad_bottom - kernel) / stride + 1; }
  int32_t out_w() const { return (in_w + pad_left + pad_right - kernel) / stride + 1; }
  int64_t in_plane() const { return in_stride > 0 ? in_stride : static_cast<int64_t>(in_h) * in_w; }
  int64_t out_plane() const { return out_stride > 0 ? out_stride : static_cast<int64_t>(out_h()) * out_w(); }
  // Floats after output plane c of the range [c, c_end) that its last vector
  // may overwrite: the following planes (written after it) and the gaps.
  int64_t spill_room(int32_t c, int32_t c_end) const {
    const int64_t pixels = static_cast<int64_t>(out_h()) * out_w();
    return static_cast<int64_t>(c_end - 1 - c) * out_plane() + out_plane() - pixels;
  }
};

// Channels [c_begin, c_end).
void dwconv_chw(const DwConvParams& p, const float* weights, const float* bias,
                const float* input, float* output, int32_t c_begin, int32_t c_end,
                const Activation& act, Isa isa = default_isa());

// dwconv_chw, then swish over the channels it wrote (x / (1 + exp(-x)) after
// act), giving the bits of dwconv_chw followed by swish_rows but applying swish
// to each output vector before it is stored: no second pass over the output.
// False, doing nothing, where no kernel of this ISA fuses it (the caller then
// runs the two).
bool dwconv_chw_swish(const DwConvParams& p, const float* weights, const float* bias,
                      const float* input, float* output, int32_t c_begin, int32_t c_end,
                      const Activation& act, Isa isa = default_isa());

// ---------------------------------- 4. entry conv: HWC input -> CHW output --
//
// A dense k x k conv (any stride, explicit padding) whose input is an HWC image
// with few channels (3 matters) and whose output is CHW.
// out[o][oy][ox] = act(bias[o] + sum_{ky,kx,i} W[o][ky][kx][i] *
//                      in[oy*stride + ky - pad_top][ox*stride + kx - pad_left][i])
struct ConvHwcParams {
  int32_t in_h = 0, in_w = 0, in_c = 3, out_c = 0;
  int32_t kernel = 3, stride = 2;
  int32_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int32_t out_h() const { return (in_h + pad_top + pad_bottom - kernel) / stride + 1; }
  int32_t out_w() const { return (in_w + pad_left + pad_right - kernel) / stride + 1; }
};

// Weights in TFLite's OHWI order [out_c][k][k][in_c], packed once (layout
// private to conv_hwc2chw*.cc).
struct PackedConvHwc {
  int32_t out_c = 0, kernel = 0, in_c = 0;
  int32_t group = 0;  // output channels per group
  std::vector<float> data;
};

PackedConvHwc pack_conv_hwc2chw(const float* ohwi, int32_t out_c, int32_t kernel, int32_t in_c);

// Output rows [oy_begin, oy_end) (all output channels). input: [in_h][in_w][in_c],
// output: [out_c][out_h * out_w].
void conv_hwc2chw(const ConvHwcParams& p, const PackedConvHwc& w, const float* bias,
                  const float* input, float* output, int32_t oy_begin, int32_t oy_end,
                  const Activation& act, Isa isa = default_isa());

// --------------------------------------------- global average pooling (CHW) --
//
// out[c] = mean over p of in[c][p], channels [c_begin, c_end); input [C][stride].
void global_avg_pool_chw(const float* input, int64_t pixels, int64_t stride, float* output,
                         int32_t c_begin, int32_t c_end, Isa isa = default_isa());

// ------------------------------------------ 5. fully connected (row-major) --
//
// y[o] = act(bias[o] + sum_i w[o][i] * x[i]) for outputs [o_begin, o_end): one
// input row x of k floats against row-major weights [outputs][k] (one output
// per weight row, no packing). bias may be null (zero).
void fully_connected(const float* x, const float* w, const float* bias, float* y, int64_t k,
                     int64_t o_begin, int64_t o_end, const Activation& act, Isa isa = default_isa());

// ------------------------------------------ 6. element-wise activations --
//
// The standalone activation operators and swish (a LOGISTIC and a MUL of the
// same input, fused by the loader). The AVX2 and AVX-512 versions evaluate exp
// with a polynomial (relative error a few ulp, far inside the engine's 1e-4
// tolerance on logits); the portable ones call the C library.
enum class UnaryFn : int {
  kSigmoid,    // 1 / (1 + exp(-x))
  kTanh,       // tanh(x)
  kElu,        // x > 0 ? x : exp(x) - 1
  kHardSwish,  // x * min(max(x + 3, 0), 6) / 6
  kSwish,      // x / (1 + exp(-x))
};

// y[i] = f(x[i]) for i < n; y may be x.
void unary(UnaryFn f, const float* x, float* y, size_t n, Isa isa = default_isa());

// y[i] = GELU(x[i]) = x[i] * Phi(x[i]) for i < n, Phi by erf, or by tanh when
// approximate (gelu.cc; a few ulp on every ISA); y may be x.
void gelu(const float* x, float* y, size_t n, bool approximate, Isa isa = default_isa());

// Swish in place over rows [r0, r1) x columns [c0, c1) of a [rows][stride]
// array: a conv's epilogue over the part of its output it just wrote.
inline void swish_rows(float* y, int64_t stride, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = y + r * stride + c0;
    unary(UnaryFn::kSwish, row, row, static_cast<size_t>(c1 - c0));
  }
}

}  // namespace kernels
}  // namespace spruce

#include "kernels/qs8.h"
