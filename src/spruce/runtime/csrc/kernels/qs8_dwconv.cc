// int8 depthwise convolution in CHW (see qs8.h): each channel's plane is
// copied once into a zero-padded int16 plane of (x - zero point), so every tap
// is a plain load and the border needs no test.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/kernels_impl.h"

namespace spruce {
namespace kernels {

#if SPRUCE_X86_KERNELS
bool qs8_dwconv_chw_avx512(const QS8DwParams& p, const int16_t* weights, const int32_t* bias,
                           const float* scale, const QS8Output& out, const int8_t* input, int8_t* output,
                           int32_t c_begin, int32_t c_end, int16_t* scratch);
bool qs8_dwconv_chw_vnni(const QS8DwParams& p, const int16_t* weights, const int32_t* bias, const float* scale,
                         const QS8Output& out, const int8_t* input, int8_t* output, int32_t c_begin,
                         int32_t c_end, uint8_t* scratch);
size_t qs8_dwconv_quad_scratch(const QS8DwParams& p);
bool qs8_dwconv_chw_dw3(const QS8DwParams& p, const int32_t* taps, const int32_t* bias, const float* scale,
                        const QS8Output& out, const int8_t* input, int8_t* output, int32_t c_begin, int32_t c_end,
                        uint8_t* scratch);
size_t qs8_dwconv_dw3_scratch_bytes(const QS8DwParams& p);
bool cpu_has_avx512_vbmi2();
bool cpu_has_avx512_vbmi();
#endif

size_t qs8_dwconv_scratch(const QS8DwParams& p) {
  // The padded plane as float32 (the AVX-512 kernel) is the larger layout:
  // two int16 per float, plus a row of int32 sums and vector slack.
  const size_t plane = static_cast<size_t>(p.padded_h()) * (p.padded_w() + 40);
  size_t values = 2 * plane + 2 * static_cast<size_t>(p.out_w + 32) + 64;
#if SPRUCE_X86_KERNELS
  values = std::max(values, (qs8_dwconv_quad_scratch(p) + 1) / 2);
  values = std::max(values, (qs8_dwconv_dw3_scratch_bytes(p) + 1) / 2);
#endif
  return values;
}

namespace {

void dwconv_portable(const QS8DwParams& p, const int16_t* weights, const int32_t* bias, const float* scale,
                     const QS8Output& out, const int8_t* input, int8_t* output, int32_t c_begin, int32_t c_end,
                     int16_t* scratch) {
  const int32_t pw = p.padded_w(), ph = p.padded_h();
  int32_t* acc = reinterpret_cast<int32_t*>(scratch);
  int16_t* plane = scratch + 2 * (p.out_w + 32);
  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  const int64_t out_plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const int32_t kk = p.kernel_h * p.kernel_w;
  for (int32_t c = c_begin; c < c_end; ++c) {
    const int8_t* x = input + c * in_plane;
    std::fill(plane, plane + static_cast<int64_t>(ph) * pw, int16_t{0});
    for (int32_t y = 0; y < ph; ++y) {
      const int32_t iy = y - p.pad_top;
      if (iy < 0 || iy >= p.in_h) continue;
      for (int32_t xx = 0; xx < pw; ++xx) {
        const int32_t ix = xx - p.pad_left;
        if (ix >= 0 && ix < p.in_w) {
          plane[y * pw + xx] = static_cast<int16_t>(x[iy * p.in_w + ix] - p.input_zero_point);
        }
      }
    }
    const int16_t* wc = weights + static_cast<int64_t>(c) * kk;
    int8_t* yc = output + c * out_plane;
    for (int32_t oy = 0; oy < p.out_h; ++oy) {
      for (int32_t ox = 0; ox < p.out_w; ++ox) acc[ox] = bias[c];
      for (int32_t ky = 0; ky < p.kernel_h; ++ky) {
        const int16_t* row = plane + (oy * p.stride_h + ky) * pw;
        for (int32_t kx = 0; kx < p.kernel_w; ++kx) {
          const int32_t wv = wc[ky * p.kernel_w + kx];
          for (int32_t ox = 0; ox < p.out_w; ++ox) acc[ox] += wv * row[ox * p.stride_w + kx];
        }
      }
      for (int32_t ox = 0; ox < p.out_w; ++ox) {
        yc[oy * p.out_w + ox] = qs8_requantize(acc[ox], scale[c], out.lo, out.hi, out.zero_point);
      }
    }
  }
}

}  // namespace

QS8DwWeights pack_qs8_dw(const QS8DwParams& p, const int8_t* weights, int32_t channels, const int32_t* bias,
                         const float* scale) {
  QS8DwWeights w;
  const int32_t kh = p.kernel_h, kw = p.kernel_w;
  const int64_t taps = static_cast<int64_t>(kh) * kw;
  w.weights.assign(weights, weights + channels * taps);
  w.bias.assign(static_cast<size_t>(channels), 0);
  if (bias) w.bias.assign(bias, bias + channels);
  w.scale.assign(scale, scale + channels);
  if (kw != 3) return w;
  // The 3-wide kernel's vpdpbusd take one dword of 4 input bytes each: the
  // row's 3 taps placed to start at byte j of the dword, and, for starts past
  // byte 1, the taps that fall into the next dword. Stride 1 starts outputs at
  // bytes 0..3, stride 2 at bytes 0 and 2 (the last three dwords unused).
  w.dw3_taps.resize(static_cast<size_t>(channels) * kh * 6);
  w.dw3_bias.resize(static_cast<size_t>(channels));
  for (int32_t c = 0; c < channels; ++c) {
    const int8_t* wc = weights + c * taps;
    int64_t sum = 0;
    for (int32_t ky = 0; ky < kh; ++ky) {
      const int8_t* r = wc + 3 * ky;
      sum += r[0] + r[1] + r[2];
      const uint32_t row = static_cast<uint32_t>(static_cast<uint8_t>(r[0])) |
                           static_cast<uint32_t>(static_cast<uint8_t>(r[1])) << 8 |
                           static_cast<uint32_t>(static_cast<uint8_t>(r[2])) << 16;
      uint32_t d[6] = {row, 0, 0, 0, 0, 0};
      if (p.stride_w == 1) {
        d[1] = row << 8, d[2] = row << 16, d[3] = row >> 16, d[4] = row << 24, d[5] = row >> 8;
      } else {
        d[1] = row << 16, d[2] = row >> 16;
      }
      for (int i = 0; i < 6; ++i) w.dw3_taps[(static_cast<size_t>(c) * kh + ky) * 6 + i] = static_cast<int32_t>(d[i]);
    }
    // |sum| <= 128 * kh * 3 and |zp + 128| <= 255: the correction is far from overflowing int64.
    const int64_t b = static_cast<int64_t>(w.bias[c]) - (static_cast<int64_t>(p.input_zero_point) + 128) * sum;
    if (b < INT32_MIN || b > INT32_MAX) {
      // The kernel's int32 sums could not hold this bias: leave the shape to the other kernels.
      w.dw3_taps.clear();
      w.dw3_bias.clear();
      return w;
    }
    w.dw3_bias[c] = static_cast<int32_t>(b);
  }
  return w;
}

void qs8_dwconv_chw(const QS8DwParams& p, const QS8DwWeights& w, const QS8Output& out, const int8_t* input,
                    int8_t* output, int32_t c_begin, int32_t c_end, int16_t* scratch, Isa isa) {
  const int16_t* weights = w.weights.data();
  const int32_t* bias = w.bias.data();
  const float* scale = w.scale.data();
#if SPRUCE_X86_KERNELS
  if (resolve_isa(isa) == Isa::kAvx512 && cpu_has_avx512_vnni() && cpu_has_avx512_vbmi() && cpu_has_avx512_vbmi2() &&
      !w.dw3_taps.empty() &&
      qs8_dwconv_chw_dw3(p, w.dw3_taps.data(), w.dw3_bias.data(), scale, out, input, output, c_begin, c_end,
                         reinterpret_cast<uint8_t*>(scratch))) {
    return;
  }
  if (resolve_isa(isa) == Isa::kAvx512 && cpu_has_avx512_vnni() && cpu_has_avx512_vbmi() &&
      qs8_dwconv_chw_vnni(p, weights, bias, scale, out, input, output, c_begin, c_end,
                          reinterpret_cast<uint8_t*>(scratch))) {
    return;
  }
  if (resolve_isa(isa) == Isa::kAvx512 && cpu_has_avx512_vnni() &&
      qs8_dwconv_chw_avx512(p, weights, bias, scale, out, input, output, c_begin, c_end, scratch)) {
    return;
  }
#endif
  dwconv_portable(p, weights, bias, scale, out, input, output, c_begin, c_end, scratch);
}

}  // namespace kernels
}  // namespace spruce
