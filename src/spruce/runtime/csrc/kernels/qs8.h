// int8 kernels (TFLite's full-integer models: int8 activations with a zero
// point, int8 weights with a scale per output channel, int32 biases).
//
// Every kernel requantizes its int32 sums as XNNPACK's qs8/qc8w kernels do,
// which is what LiteRT runs on x86: y = clamp(acc * scale, min - zp, max - zp)
// in float32, rounded to nearest even, plus the output zero point. All ISAs
// give the same bits (integer sums are exact; the float steps are the same
// IEEE operations in the same order).
//
// Included by kernels.h; same conventions (explicit work ranges whose parts
// give the whole's bits, no allocation, preconditions are the caller's).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace spruce {
namespace kernels {

enum class Isa : int;

// One output channel's requantization: acc -> int8.
inline int8_t qs8_requantize(int32_t acc, float scale, float lo, float hi, int32_t zero_point) {
  float f = static_cast<float>(acc) * scale;
  f = f < lo ? lo : f;
  f = f > hi ? hi : f;
  return static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(f)) + zero_point);
}

// Output quantization shared by the int8 convolutions: the zero point and the
// clamp (the fused activation's range), kept as floats relative to the zero
// point (lo = out_min - zp, hi = out_max - zp) as the kernels use them.
struct QS8Output {
  int32_t zero_point = 0;
  float lo = -128.0f, hi = 127.0f;
};

// ------------------------------------------ int8 1x1 conv in CHW, 4-blocks --
//
// out[o][p] = requant(bias[o] + sum_i W[o][i] * (in[i][p] - in_zp))
//
// The input is read through tiles of kQS8Tile pixels in which each group of
// 4 consecutive input channels is interleaved per pixel, as unsigned bytes
// (x + 128): tile[b][p][j] = in[4b + j][p] + 128, channels past the last one
// zero. One nonzero block of 4 weights W[o][4b..4b+3] is then one
// dot-product-of-4 per pixel (AVX-512 VNNI's vpdpbusd: u8 x s8 summed in
// groups of 4 into int32), and only blocks with a nonzero weight are stored.
// The +128 is undone in the bias: bias'[o] = bias[o] - (in_zp + 128) * sum(W[o]).
constexpr int64_t kQS8Tile = 64;

struct QS8BlockMatrix {
  int32_t rows = 0, cols = 0;
  int32_t blocks = 0;              // ceil(cols / 4): 4-channel groups per tile pixel
  std::vector<int32_t> row_ptr;    // [rows + 1] into offsets / weights
  std::vector<int32_t> offsets;    // byte offset of each stored block in a tile (b * kQS8Tile * 4)
  std::vector<int32_t> weights;    // 4 int8 weights of each stored block, little-endian
  std::vector<int32_t> bias;       // [rows] bias', the corrections folded in
  std::vector<float> scale;        // [rows] input_scale * weight_scale[o] / output_scale
  QS8Output out;
  int64_t stored_blocks() const { return static_cast<int64_t>(offsets.size()); }
};

// weights: row-major [rows][cols] int8; bias: [rows] int32 (null: zero).
QS8BlockMatrix pack_qs8_blocks(const int8_t* weights, int32_t rows, int32_t cols, const int32_t* bias,
                               const float* scale, int32_t input_zero_point, const QS8Output& out);

// Bytes of one tile of a matrix with `cols` input channels.
inline size_t qs8_tile_bytes(int32_t cols) { return static_cast<size_t>((cols + 3) / 4) * kQS8Tile * 4; }

// Fills a tile from `count` <= kQS8Tile pixels starting at `p`, channels
// [0, cols) of a CHW int8 image whose planes are `stride` bytes apart. Pixels
// past `count` are left as they are (their sums are computed and dropped).
void qs8_interleave_tile(const int8_t* in, int64_t stride, int32_t cols, int64_t p, int64_t count,
                         uint8_t* tile, Isa isa);

// Rows [r_begin, r_end) of one tile: out[o * out_stride + q] for q < count.
void qs8_spmm_tile(const QS8BlockMatrix& w, const uint8_t* tile, int64_t count, int32_t r_begin,
                   int32_t r_end, int8_t* out, int64_t out_stride, Isa isa);

// True when the CPU runs AVX-512 with the VNNI and BW extensions (the int8
// kernels' AVX-512 path).
bool cpu_has_avx512_vnni();

// ------------------------------------------------------------ quantization --
//
// y[i] = round(clamp(x[i] * inverse_scale, -128 - zp, 127 - zp)) + zp, rounding
// to nearest even (XNNPACK's f32-qs8 conversion; a NaN gives -128).
void qs8_quantize(const float* x, int8_t* y, int64_t n, float inverse_scale, int32_t zero_point, Isa isa);

// ------------------------------------------------ int8 depthwise conv (CHW) --
//
// out[c][oy][ox] = requant(bias[c] + sum W[c][ky][kx] * (in[c][iy][ix] - in_zp)),
// iy = oy * stride_h + ky - pad_top, ix likewise; taps outside the image add
// nothing (TFLite pads with the zero point, which stands for 0).
struct QS8DwParams {
  int32_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int32_t kernel_h = 3, kernel_w = 3, stride_h = 1, stride_w = 1, pad_top = 0, pad_left = 0;
  int32_t input_zero_point = 0;
  // Width of the zero-padded int16 copy of a plane the kernel works on, and its rows.
  int32_t padded_w() const { return (out_w - 1) * stride_w + kernel_w; }
  int32_t padded_h() const { return (out_h - 1) * stride_h + kernel_h; }
};

// int16 values of scratch one call needs.
size_t qs8_dwconv_scratch(const QS8DwParams& p);

// A layer's weights, packed once: as given, and as the tables of the AVX-512
// kernel for 3-wide kernels (qs8_dwconv3_avx512.cc), which are empty for
// other shapes.
struct QS8DwWeights {
  std::vector<int16_t> weights;   // [C][kh][kw]
  std::vector<int32_t> bias;      // [C]
  std::vector<float> scale;       // [C]
  std::vector<int32_t> dw3_taps;  // [C][kh][6]: each kernel row shifted to each start byte
  std::vector<int32_t> dw3_bias;  // [C]: bias - (input zero point + 128) * sum(W)
};

// weights [C][kh][kw] int8, bias [C] (null: zero), scale [C].
QS8DwWeights pack_qs8_dw(const QS8DwParams& p, const int8_t* weights, int32_t channels, const int32_t* bias,
                         const float* scale);

// Channels [c_begin, c_end). input [C][in_h * in_w], output [C][out_h * out_w].
void qs8_dwconv_chw(const QS8DwParams& p, const QS8DwWeights& w, const QS8Output& out, const int8_t* input,
                    int8_t* output, int32_t c_begin, int32_t c_end, int16_t* scratch, Isa isa);

// ----------------------------------------------- int8 fully connected / matvec --
//
// y[o] = requant(bias[o] + sum_i W[o][i] * (x[i] - in_zp)) for o in [o_begin, o_end).
// x is given as unsigned bytes x + 128 (qs8_to_u8) and bias as
// bias[o] - (in_zp + 128) * sum(W[o]), as the 1x1 kernel takes them.
void qs8_fully_connected(const uint8_t* x, const int8_t* w, const int32_t* bias, const float* scale,
                         const QS8Output& out, int8_t* y, int64_t k, int64_t o_begin, int64_t o_end, Isa isa);

// y[i] = x[i] + 128 as unsigned bytes.
inline void qs8_to_u8(const int8_t* x, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(x[i] + 128);
}

}  // namespace kernels
}  // namespace spruce
