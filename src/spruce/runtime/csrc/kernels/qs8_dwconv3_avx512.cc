// AVX-512 VNNI int8 depthwise convolution for kernels 3 wide, stride 1 or 2
// (see qs8.h): every 3x3 depthwise layer of MobileNet and MobileNetV2.
//
// Each channel's plane becomes a zero-padded byte grid of x + 128 (padding
// holds zero point + 128, which stands for 0) with rows `pitch` bytes apart,
// split by row phase when the stride is 2 so that an output row's kernel rows
// are whole grid rows. Output o = oy * out_pitch + ox then reads its kernel
// row at grid byte stride * o + kx of that row's plane: 64 consecutive outputs
// read one contiguous run of bytes, so outputs are computed flat across rows
// (small planes such as 7x7 waste no vector lanes) and the columns between
// out_w and out_pitch are dropped when the results are stored.
//
// A 64-byte load gives 16 dwords of 4 grid bytes. Against one kernel row, the
// output starting at byte j of dword k (j = 0..3 for stride 1, 0 and 2 for
// stride 2) is one vpdpbusd of dword k with the row's weights shifted by j,
// plus one of dword k + 1 (the load 4 bytes on) for the taps past it. So a
// kernel row costs 6 vpdpbusd per 64 outputs at stride 1 and 6 per 64 at
// stride 2, with no shuffle of the input; the 4 sums vectors, one per start
// byte, are put back in order by one byte permutation of the packed outputs.
// The int32 sums are exact: the outputs are the portable kernel's bits.
#include "kernels/kernels_impl.h"

#if SPRUCE_X86_KERNELS && defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/qs8_avx512.h"

namespace spruce {
namespace kernels {

namespace {

#define SPRUCE_VNNI_VBMI2 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512vbmi2")))

constexpr int32_t kMaxRows = 16;      // kernel rows the weight table holds
constexpr int32_t kMaxColChunks = 32;  // grid rows up to 2048 bytes

inline __mmask64 low_bytes(int64_t n) {
  return n >= 64 ? ~__mmask64(0) : n <= 0 ? __mmask64(0) : (__mmask64(1) << n) - 1;
}

// The flat layout of one call (one layer).
struct Grid {
  int32_t stride, out_pitch, pitch;  // pitch = stride * out_pitch grid bytes a row
  int32_t planes;                    // row phases kept (min(stride_h, kernel_h))
  int32_t plane_rows;                // grid rows each plane holds
  int64_t plane_bytes;               // including the slack the last vectors read
  int64_t outputs;                   // out_h * out_pitch flat outputs
  int64_t chunks;                    // of 64 outputs
  int32_t col_chunks;                // 64-byte stores a grid row takes
  __mmask64 col_mask[kMaxColChunks];  // each store's bytes from the input row
};

Grid grid_of(const QS8DwParams& p) {
  Grid g;
  g.stride = p.stride_w;
  // A valid output's taps stay inside its row, or reach into the next row's
  // left padding (which then serves as this row's right padding).
  const int32_t reach = p.stride_w * (p.out_w - 1) + p.kernel_w - p.pad_left;
  const int32_t width = std::max({reach, p.pad_left + p.in_w, p.stride_w * p.out_w});
  g.out_pitch = (width + p.stride_w - 1) / p.stride_w;
  g.pitch = g.stride * g.out_pitch;
  g.planes = std::min(p.stride_h, p.kernel_h);
  // out_h rows, the kernel's extra rows in this phase, and one row whose
  // left padding the last row's taps may reach.
  g.plane_rows = p.out_h + (p.kernel_h - 1) / p.stride_h + 1;
  g.outputs = static_cast<int64_t>(p.out_h) * g.out_pitch;
  g.chunks = (g.outputs + 63) / 64;
  // The last chunk's loads reach 64 * stride + 4 bytes past its first tap.
  const int64_t reads = g.chunks * 64 * g.stride + static_cast<int64_t>((p.kernel_h - 1) / p.stride_h) * g.pitch +
                        64 * g.stride + 64;
  g.plane_bytes = (std::max<int64_t>(reads, static_cast<int64_t>(g.plane_rows) * g.pitch + 64) + 63) / 64 * 64;
  g.col_chunks = (g.pitch + 63) / 64;
  for (int32_t cc = 0; cc < std::min(g.col_chunks, kMaxColChunks); ++cc) {
    const int32_t start = 64 * cc - p.pad_left;  // input column of the store's byte 0
    g.col_mask[cc] = low_bytes(p.in_w - start) & ~low_bytes(-start);
  }
  return g;
}

bool covers(const QS8DwParams& p) {
  return p.kernel_w == 3 && (p.stride_w == 1 || p.stride_w == 2) && p.kernel_h <= kMaxRows &&
         (p.stride_h == 1 || p.stride_h == 2) && grid_of(p).col_chunks <= kMaxColChunks;
}

// Rows of one plane: grid row j from padded row j * stride_h + phase (input
// row that less pad_top). Each 64-byte store is one masked load of the input
// row, padding where the mask is off, with the sign bit flipped (x + 128).
SPRUCE_VNNI_VBMI2 void build_plane(const QS8DwParams& p, const Grid& g, const int8_t* x, int32_t phase,
                                   __m512i pad, uint8_t* plane) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i pad_u8 = _mm512_xor_si512(pad, flip);
  const int32_t in_h = p.in_h, in_w = p.in_w, pad_left = p.pad_left, sh = p.stride_h, pitch = g.pitch;
  const int32_t cols = g.col_chunks;
  for (int32_t j = 0, iy = phase - p.pad_top; j < g.plane_rows; ++j, iy += sh) {
    uint8_t* dst = plane + static_cast<int64_t>(j) * pitch;
    // Stores of a whole vector spill past the row: the next row, built after, overwrites them.
    if (iy < 0 || iy >= in_h) {
      for (int32_t cc = 0; cc < cols; ++cc) _mm512_storeu_si512(dst + 64 * cc, pad_u8);
      continue;
    }
    // Masked-off bytes are never read, so the address may lie outside the row.
    const char* src = reinterpret_cast<const char*>(x) + static_cast<int64_t>(iy) * in_w - pad_left;
    for (int32_t cc = 0; cc < cols; ++cc) {
      const __m512i v = _mm512_mask_loadu_epi8(pad, g.col_mask[cc], src + 64 * cc);
      _mm512_storeu_si512(dst + 64 * cc, _mm512_xor_si512(v, flip));
    }
  }
}

// Byte index of the packed sums (qs8_requantize_64_packed: byte 16L + 4v + i
// holds lane 4L + i of sums vector v) for each output in order.
SPRUCE_VNNI_VBMI2 __m512i output_order(int32_t stride) {
  alignas(64) uint8_t idx[64];
  for (int32_t n = 0; n < 64; ++n) {
    int32_t v, k;
    if (stride == 1) {
      v = n % 4, k = n / 4;  // vector v holds outputs 4k + v
    } else {
      v = 2 * (n / 32) + n % 2, k = (n % 32) / 2;  // vectors: even and odd of each 32
    }
    idx[n] = static_cast<uint8_t>(16 * (k / 4) + 4 * v + k % 4);
  }
  return _mm512_load_si512(idx);
}

// One channel: builds its grid, then 64 outputs at a time. w holds, per
// kernel row, the weight dwords of each vpdpbusd (QS8DwWeights::dw3_taps).
template <int S, int KH>
SPRUCE_VNNI_VBMI2 void channel(const QS8DwParams& p, const Grid& g, const int32_t* w, int32_t bias,
                               __m512 scale, __m512 hi, __m512i zp16, __m512i out_min, __m512i order,
                               const int8_t* x, __m512i pad, const __mmask64* keep, uint8_t* planes, int8_t* y) {
  const int32_t kh = KH ? KH : p.kernel_h;
  const int32_t sh = p.stride_h;
  for (int32_t ph = 0; ph < g.planes; ++ph) build_plane(p, g, x, ph, pad, planes + ph * g.plane_bytes);
  const uint8_t* rows[KH ? KH : kMaxRows];
  for (int32_t ky = 0; ky < kh; ++ky) rows[ky] = planes + (ky % sh) * g.plane_bytes + (ky / sh) * g.pitch;
  const __m512i b = _mm512_set1_epi32(bias);
  const int64_t chunks = g.chunks;
  for (int64_t c = 0; c < chunks; ++c) {
    __m512i acc[4] = {b, b, b, b};
#pragma GCC unroll 16
    for (int32_t ky = 0; ky < kh; ++ky) {
      const uint8_t* src = rows[ky] + c * 64 * S;
      // Broadcast from memory: each weight dword is an operand of its vpdpbusd.
      const int32_t* t = w + 6 * ky;
      const __m512i wk[6] = {_mm512_set1_epi32(t[0]), _mm512_set1_epi32(t[1]), _mm512_set1_epi32(t[2]),
                             _mm512_set1_epi32(t[3]), _mm512_set1_epi32(t[4]), _mm512_set1_epi32(t[5])};
      if (S == 1) {
        const __m512i l0 = _mm512_loadu_si512(src), l1 = _mm512_loadu_si512(src + 4);
        acc[0] = _mm512_dpbusd_epi32(acc[0], l0, wk[0]);
        acc[1] = _mm512_dpbusd_epi32(acc[1], l0, wk[1]);
        acc[2] = _mm512_dpbusd_epi32(acc[2], l0, wk[2]);
        acc[3] = _mm512_dpbusd_epi32(acc[3], l0, wk[4]);
        acc[2] = _mm512_dpbusd_epi32(acc[2], l1, wk[3]);
        acc[3] = _mm512_dpbusd_epi32(acc[3], l1, wk[5]);
      } else {
        const __m512i l0 = _mm512_loadu_si512(src), l1 = _mm512_loadu_si512(src + 4);
        const __m512i l2 = _mm512_loadu_si512(src + 64), l3 = _mm512_loadu_si512(src + 68);
        acc[0] = _mm512_dpbusd_epi32(acc[0], l0, wk[0]);
        acc[1] = _mm512_dpbusd_epi32(acc[1], l0, wk[1]);
        acc[2] = _mm512_dpbusd_epi32(acc[2], l2, wk[0]);
        acc[3] = _mm512_dpbusd_epi32(acc[3], l2, wk[1]);
        acc[1] = _mm512_dpbusd_epi32(acc[1], l1, wk[2]);
        acc[3] = _mm512_dpbusd_epi32(acc[3], l3, wk[2]);
      }
    }
    const __m512i packed = qs8_requantize_64_packed(acc, scale, hi, zp16, out_min);
    const __m512i out = _mm512_permutexvar_epi8(order, packed);
    const __mmask64 m = keep[c];
    const int32_t n = _mm_popcnt_u64(m);
    _mm512_mask_storeu_epi8(y, low_bytes(n), _mm512_maskz_compress_epi8(m, out));
    y += n;
  }
}

}  // namespace

size_t qs8_dwconv_dw3_scratch_bytes(const QS8DwParams& p) {
  if (!covers(p)) return 0;
  const Grid g = grid_of(p);
  return static_cast<size_t>(g.planes * g.plane_bytes + g.chunks * 8 + 64);
}

// False (nothing done) for the shapes it does not cover (see covers). taps and
// bias are QS8DwWeights::dw3_taps and dw3_bias.
SPRUCE_VNNI_VBMI2 bool qs8_dwconv_chw_dw3(const QS8DwParams& p, const int32_t* taps, const int32_t* bias,
                                          const float* scale, const QS8Output& out, const int8_t* input,
                                          int8_t* output, int32_t c_begin, int32_t c_end, uint8_t* scratch) {
  if (!covers(p)) return false;
  const int32_t kh = p.kernel_h;
  const Grid g = grid_of(p);
  uint8_t* planes = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63));
  __mmask64* keep = reinterpret_cast<__mmask64*>(planes + g.planes * g.plane_bytes);
  // Which of each chunk's 64 flat outputs are real (column < out_w, row < out_h).
  std::fill(keep, keep + g.chunks, __mmask64(0));
  for (int64_t oy = 0; oy < p.out_h; ++oy) {
    for (int64_t o = oy * g.out_pitch, end = o + p.out_w; o < end;) {
      const int64_t bit = o % 64, n = std::min<int64_t>(end - o, 64 - bit);
      keep[o / 64] |= low_bytes(n) << bit;
      o += n;
    }
  }
  // The slack past the rows is read only for dropped outputs; it is filled once so that it is defined.
  const int64_t rows_end = static_cast<int64_t>(g.plane_rows) * g.pitch;
  for (int32_t ph = 0; ph < g.planes; ++ph) {
    std::memset(planes + ph * g.plane_bytes + rows_end, 0, static_cast<size_t>(g.plane_bytes - rows_end));
  }
  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  const int64_t out_plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const __m512 hi = _mm512_set1_ps(out.hi);
  const int32_t out_min = std::max(-128, std::min(127, static_cast<int32_t>(out.lo) + out.zero_point));
  const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(out.zero_point));
  const __m512i omin = _mm512_set1_epi8(static_cast<char>(out_min));
  const __m512i order = output_order(p.stride_w);
  const __m512i pad = _mm512_set1_epi8(static_cast<char>(p.input_zero_point));
  auto run = p.stride_w == 1 ? (kh == 3 ? &channel<1, 3> : &channel<1, 0>) : (kh == 3 ? &channel<2, 3> : &channel<2, 0>);
  for (int32_t c = c_begin; c < c_end; ++c) {
    run(p, g, taps + static_cast<int64_t>(c) * kh * 6, bias[c], _mm512_set1_ps(scale[c]), hi, zp16, omin, order,
        input + c * in_plane, pad, keep, planes, output + c * out_plane);
  }
  return true;
}

}  // namespace kernels
}  // namespace spruce

#endif
