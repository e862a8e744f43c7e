// AVX-512 int8 depthwise convolution (see qs8.h). The padded plane holds the
// values x - zero point as float32: every product of an int8 weight and such a
// value, and every sum of up to 25 of them, is an integer below 2^24, so float
// FMAs give the exact int32 sum that the portable kernel forms.
#include "kernels/kernels_impl.h"

#if SPRUCE_X86_KERNELS && defined(__AVX512F__)
#include <immintrin.h>

#include "kernels/qs8_avx512.h"

#include <algorithm>

namespace spruce {
namespace kernels {

namespace {

// Exactness bound: kernel taps whose sums of products stay below 2^24.
constexpr int32_t kMaxTaps = 25;

inline __mmask16 first(int32_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << n) - 1);
}

// 16 int8 values (the first n; masked loads touch no others) as floats x - zp.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load_centered(const int8_t* x, int32_t n,
                                                                                   __m512i zp) {
  const __m128i b = _mm_maskz_loadu_epi8(first(n), x);
  return _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(b), zp));
}

// One input row into its zeroed padded row: at column pad_left + ix, or for
// stride 2 at column (pad_left + ix) / 2 of the even or odd half plane.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void fill_row(const int8_t* x, int32_t w, int32_t zero_point, int32_t pad_left, int32_t stride, int32_t half_floats,
              float* row) {
  const __m512i zp = _mm512_set1_epi32(zero_point);
  if (stride == 1) {
    for (int32_t ix = 0; ix < w; ix += 16) {
      _mm512_mask_storeu_ps(row + pad_left + ix, first(w - ix), load_centered(x + ix, w - ix, zp));
    }
    return;
  }
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  // Input ix lands in half (pad_left + ix) % 2: the even inputs go to half pad_left % 2.
  float* to_even = row + (pad_left & 1) * half_floats;
  float* to_odd = row + ((pad_left + 1) & 1) * half_floats;
  for (int32_t ix = 0; ix < w; ix += 32) {
    const int32_t n = w - ix;
    const __m512 v0 = load_centered(x + ix, n, zp), v1 = load_centered(x + ix + 16, n - 16, zp);
    const int32_t col = (pad_left + ix) / 2;
    const int32_t col_odd = (pad_left + ix + 1) / 2;
    const int32_t n_even = (std::min(n, 32) + 1) / 2, n_odd = std::min(n, 32) / 2;
    _mm512_mask_storeu_ps(to_even + col, first(n_even), _mm512_permutex2var_ps(v0, even, v1));
    _mm512_mask_storeu_ps(to_odd + col_odd, first(n_odd), _mm512_permutex2var_ps(v0, odd, v1));
  }
}

#define SPRUCE_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl")))

// The pad columns of a padded row (the data columns are written after): for
// stride 1 columns [0, pad_left) and [pad_left + w, pw); for stride 2 the same
// columns in the even and odd half planes. Columns past pw are only read for
// output lanes that are dropped, so they may hold anything.
SPRUCE_AVX512BW void zero_pads(float* row, int32_t w, int32_t pad_left, int32_t pw, int32_t stride,
                               int32_t half_floats) {
  const __m512 z = _mm512_setzero_ps();
  const int32_t end = pad_left + w;
  if (stride == 1) {
    for (int32_t c = 0; c < pad_left; c += 16) _mm512_storeu_ps(row + c, z);
    for (int32_t c = end; c < pw; c += 16) _mm512_storeu_ps(row + c, z);
    return;
  }
  const int32_t half_w = (pw + 1) / 2;
  for (int32_t h = 0; h < 2; ++h) {
    float* part = row + h * half_floats;
    // Half h holds columns 2j + h: pads below pad_left, and from end on.
    const int32_t first_data = (pad_left - h + 1) / 2, first_after = (end - h + 1) / 2;
    for (int32_t j = 0; j < first_data; j += 16) _mm512_storeu_ps(part + j, z);
    for (int32_t j = first_after; j < half_w; j += 16) _mm512_storeu_ps(part + j, z);
  }
}

// Requantizes 16 exact sums (as floats) and stores the first n as int8.
SPRUCE_AVX512BW inline void store_outputs(__m512 acc, __m512i bias, __m512 scale, __m512 lo, __m512 hi, __m512i zp,
                                          int8_t* dst, int32_t n) {
  const __m512i sum = _mm512_add_epi32(_mm512_cvtps_epi32(acc), bias);
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
  f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
  _mm_mask_storeu_epi8(dst, first(n), _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(f), zp)));
}

// One channel's outputs from its padded plane. KH, KW, SW > 0 fix the kernel
// and stride at compile time (the common 3x3 and 5x5); 0 reads them from p.
// Three accumulators (by kernel row) keep the FMA chains short; the partial
// sums are exact integers, so adding them in any order gives the same sum.
template <int KH, int KW, int SW>
SPRUCE_AVX512BW void channel_outputs(const QS8DwParams& p, const float* plane, int32_t row_floats,
                                     int32_t half_floats, const __m512* wv, __m512i bias, __m512 scale, __m512 lo,
                                     __m512 hi, __m512i zp, int8_t* yc) {
  const int32_t kh = KH ? KH : p.kernel_h, kw = KW ? KW : p.kernel_w, sw = SW ? SW : p.stride_w;
  for (int32_t oy = 0; oy < p.out_h; ++oy) {
    const float* rows = plane + static_cast<int64_t>(oy * p.stride_h) * row_floats;
    for (int32_t ox = 0; ox < p.out_w; ox += 16) {
      __m512 acc[3] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int32_t ky = 0; ky < kh; ++ky) {
        const float* row = rows + static_cast<int64_t>(ky) * row_floats;
        for (int32_t kx = 0; kx < kw; ++kx) {
          const float* src = sw == 2 ? row + (kx & 1) * half_floats + kx / 2 + ox : row + kx + ox;
          acc[ky % 3] = _mm512_fmadd_ps(_mm512_loadu_ps(src), wv[ky * kw + kx], acc[ky % 3]);
        }
      }
      const __m512 total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), acc[2]);
      store_outputs(total, bias, scale, lo, hi, zp, yc + static_cast<int64_t>(oy) * p.out_w + ox,
                    std::min(16, p.out_w - ox));
    }
  }
}

// ------------------------------------------------------- VNNI quad kernel --
//
// Each padded input row is turned into a row of quads: lane j holds the four
// unsigned bytes x + 128 at columns stride * j .. stride * j + 3. One kernel
// row of up to 4 taps is then one vpdpbusd per 16 outputs (the weights of the
// row as 4 signed bytes, zeros past the kernel's width), against 3 float FMAs
// and their loads; a row of 5 to 8 taps takes a second quad 4 columns on,
// which is 4 / stride lanes on. Padding holds zero point + 128, the byte
// that stands for 0; the +128 and the zero point come out of the bias:
// bias' = bias - (zero point + 128) * sum(W). The int32 sums are exact, so
// the outputs are the portable kernel's bits.

#define SPRUCE_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

// The quads a row needs: the outputs in whole vectors, and one vector more
// for the second quad's shift.
inline int32_t quad_lanes(const QS8DwParams& p) { return (p.out_w + 15) / 16 * 16 + (p.kernel_w > 4 ? 16 : 0); }

// One padded input row (iy may be outside the image: all padding) as quads.
// Each group of 16 quads is permuted from one 64-byte masked load of the
// input row: bytes outside the image take the zero point, and flipping the
// sign bit then gives x + 128 and, for padding, zero point + 128.
// Writes `lanes` rounded up to a whole vector.
SPRUCE_AVX512VNNI void build_quad_row(const QS8DwParams& p, const int8_t* x, int32_t iy, __m512i pad,
                                      __m512i index, int32_t lanes, int32_t* quads) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  if (iy < 0 || iy >= p.in_h) {
    const __m512i v = _mm512_xor_si512(pad, flip);
    for (int32_t j = 0; j < lanes; j += 16) _mm512_storeu_si512(quads + j, v);
    return;
  }
  const int8_t* src = x + static_cast<int64_t>(iy) * p.in_w;
  for (int32_t j = 0; j < lanes; j += 16) {
    const int32_t start = p.stride_w * j - p.pad_left;  // input column of the group's byte 0
    const int32_t low = std::max(0, -start), high = std::min(64, p.in_w - start);
    __m512i v = pad;
    if (high > low) {
      const __mmask64 below = low > 0 ? (__mmask64(1) << low) - 1 : 0;
      const __mmask64 upto = high >= 64 ? ~__mmask64(0) : (__mmask64(1) << high) - 1;
      // Masked-off bytes are never read, so the address may lie outside the row.
      v = _mm512_mask_loadu_epi8(pad, upto & ~below, reinterpret_cast<const char*>(src) + start);
    }
    _mm512_storeu_si512(quads + j, _mm512_permutexvar_epi8(index, _mm512_xor_si512(v, flip)));
  }
}

// One channel. KH > 0 and NQ > 0 fix the kernel's rows and quads per row at
// compile time (3x3 and 5x5); 0 reads them from p.
template <int KH, int NQ>
SPRUCE_AVX512VNNI void quad_channel(const QS8DwParams& p, const __m512i* wq, int32_t bias, __m512 scale,
                                    __m512 lo, __m512 hi, __m512i zp, const int8_t* x, __m512i pad,
                                    __m512i index, int32_t* ring, int8_t* yc) {
  const int32_t kh = KH ? KH : p.kernel_h, nq = NQ ? NQ : (p.kernel_w + 3) / 4;
  const int32_t lanes = quad_lanes(p), shift = 4 / p.stride_w;
  const __m512i b = _mm512_set1_epi32(bias);
  int32_t next = 0;  // the next padded row to turn into quads
  for (int32_t oy = 0; oy < p.out_h; ++oy) {
    const int32_t top = oy * p.stride_h;
    // A ring of kh quad rows: rows top .. top + kh - 1 sit in distinct slots.
    for (next = std::max(next, top); next < top + kh; ++next) {
      build_quad_row(p, x, next - p.pad_top, pad, index, lanes, ring + (next % kh) * lanes);
    }
    const int32_t* rows[KH ? KH : 64];
    for (int32_t ky = 0; ky < kh; ++ky) rows[ky] = ring + ((top + ky) % kh) * lanes;
    int8_t* dst = yc + static_cast<int64_t>(oy) * p.out_w;
    for (int32_t ox = 0; ox < p.out_w; ox += 16) {
      __m512i acc = b;
      for (int32_t ky = 0; ky < kh; ++ky) {
        for (int32_t q = 0; q < nq; ++q) {
          acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(rows[ky] + ox + q * shift), wq[ky * nq + q]);
        }
      }
      __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
      f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
      const __m128i y = _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(f), zp));
      if (p.out_w - ox >= 16) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + ox), y);
      } else {
        _mm_mask_storeu_epi8(dst + ox, first(p.out_w - ox), y);
      }
    }
  }
}

// Kernel rows of one quad, any stride. The channel's quads are laid out flat,
// out_w lanes a row, in one plane per row phase (padded rows r, r + stride_h,
// ...), so that the outputs, stored contiguously in CHW, are 16 consecutive
// lanes of each tap's plane: vectors span rows and small planes (14x14, 7x7)
// waste no lanes, and 64 outputs requantize and store at once.
inline int32_t flat_rows(const QS8DwParams& p) { return p.out_h + (p.kernel_h - 1) / p.stride_h; }
inline int64_t flat_plane_lanes(const QS8DwParams& p) { return static_cast<int64_t>(flat_rows(p)) * p.out_w + 64; }

template <int KH, int SH>
SPRUCE_AVX512VNNI void flat_channel(const QS8DwParams& p, const __m512i* wq, int32_t bias, __m512 scale,
                                    __m512 hi, __m512i zp16, __m512i out_min, __m512i order, const int8_t* x,
                                    __m512i pad, __m512i index, int32_t* planes, int8_t* yc) {
  const int32_t kh = KH ? KH : p.kernel_h, sh = SH ? SH : p.stride_h, pitch = p.out_w;
  const int32_t rows = flat_rows(p);
  const int64_t plane_lanes = flat_plane_lanes(p);
  for (int32_t r = 0; r < std::min(sh, kh); ++r) {
    int32_t* plane = planes + r * plane_lanes;
    // In order: each row's last vector spills into the next row, which overwrites it.
    for (int32_t i = 0; i < rows; ++i) {
      build_quad_row(p, x, r + i * sh - p.pad_top, pad, index, pitch, plane + static_cast<int64_t>(i) * pitch);
    }
  }
  const int32_t* taps[KH ? KH : 64];
  for (int32_t ky = 0; ky < kh; ++ky) taps[ky] = planes + (ky % sh) * plane_lanes + (ky / sh) * pitch;
  const __m512i b = _mm512_set1_epi32(bias);
  const int64_t n = static_cast<int64_t>(p.out_h) * p.out_w;
  for (int64_t l = 0; l < n; l += 64) {
    __m512i acc[4] = {b, b, b, b};
    for (int32_t ky = 0; ky < kh; ++ky) {
      for (int v = 0; v < 4; ++v) {
        acc[v] = _mm512_dpbusd_epi32(acc[v], _mm512_loadu_si512(taps[ky] + l + 16 * v), wq[ky]);
      }
    }
    const __m512i y = qs8_requantize_64(acc, scale, hi, zp16, out_min, order);
    if (n - l >= 64) {
      _mm512_storeu_si512(yc + l, y);
    } else {
      _mm512_mask_storeu_epi8(yc + l, (__mmask64(1) << (n - l)) - 1, y);
    }
  }
}

}  // namespace

bool cpu_has_avx512_vbmi() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  return has;
}

bool cpu_has_avx512_vbmi2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi2") != 0;
  }();
  return has;
}

size_t qs8_dwconv_quad_scratch(const QS8DwParams& p) {
  const size_t ring = static_cast<size_t>(p.kernel_h) * quad_lanes(p) * 4;
  const size_t flat = static_cast<size_t>(std::min(p.stride_h, p.kernel_h)) * flat_plane_lanes(p) * 4;
  return std::max(ring, flat);
}

// False (nothing done) for shapes the quads do not cover: kernel rows of more
// than 8 taps, strides that do not divide the second quad's 4-column shift,
// and weights outside int8.
SPRUCE_AVX512VNNI bool qs8_dwconv_chw_vnni(const QS8DwParams& p, const int16_t* weights, const int32_t* bias,
                                           const float* scale, const QS8Output& out, const int8_t* input,
                                           int8_t* output, int32_t c_begin, int32_t c_end, uint8_t* scratch) {
  const int32_t kh = p.kernel_h, kw = p.kernel_w, sw = p.stride_w, nq = (kw + 3) / 4;
  if (kw > 8 || sw > 4 || (nq == 2 && 4 % sw != 0) || kh > 64) return false;
  const int64_t taps = static_cast<int64_t>(kh) * kw;
  for (int64_t i = c_begin * taps; i < c_end * taps; ++i) {
    if (weights[i] < -128 || weights[i] > 127) return false;
  }
  int32_t* ring = reinterpret_cast<int32_t*>(scratch);
  alignas(64) uint8_t idx[64];
  for (int32_t j = 0; j < 16; ++j) {
    for (int32_t b = 0; b < 4; ++b) idx[4 * j + b] = static_cast<uint8_t>(sw * j + b);
  }
  const __m512i index = _mm512_load_si512(idx);
  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  const int64_t out_plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const __m512 lo = _mm512_set1_ps(out.lo), hi = _mm512_set1_ps(out.hi);
  const __m512i zp = _mm512_set1_epi32(out.zero_point);
  const __m512i pad = _mm512_set1_epi8(static_cast<char>(p.input_zero_point));
  const int32_t out_min = std::max(-128, std::min(127, static_cast<int32_t>(out.lo) + out.zero_point));
  const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(out.zero_point));
  const __m512i omin = _mm512_set1_epi8(static_cast<char>(out_min));
  const __m512i order = qs8_requantize_64_order();
  auto flat = &flat_channel<0, 0>;
  if (kh == 3) flat = p.stride_h == 1 ? &flat_channel<3, 1> : p.stride_h == 2 ? &flat_channel<3, 2> : flat;
  auto run = &quad_channel<0, 0>;
  if (kh == 3 && nq == 1) run = &quad_channel<3, 1>;
  if (kh == 5 && nq == 2) run = &quad_channel<5, 2>;
  __m512i wq[2 * 64];
  for (int32_t c = c_begin; c < c_end; ++c) {
    const int16_t* wc = weights + c * taps;
    int32_t sum = 0;
    for (int32_t ky = 0; ky < kh; ++ky) {
      for (int32_t q = 0; q < nq; ++q) {
        uint32_t packed = 0;
        for (int32_t t = 0; t < 4 && 4 * q + t < kw; ++t) {
          const int16_t v = wc[ky * kw + 4 * q + t];
          sum += v;
          packed |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(v))) << (8 * t);
        }
        wq[ky * nq + q] = _mm512_set1_epi32(static_cast<int32_t>(packed));
      }
    }
    const int32_t b = bias[c] - (p.input_zero_point + 128) * sum;
    if (nq == 1) {
      flat(p, wq, b, _mm512_set1_ps(scale[c]), hi, zp16, omin, order, input + c * in_plane, pad, index, ring,
           output + c * out_plane);
    } else {
      run(p, wq, b, _mm512_set1_ps(scale[c]), lo, hi, zp, input + c * in_plane, pad, index, ring,
          output + c * out_plane);
    }
  }
  return true;
}

// False (nothing done) for kernels the float sums would not keep exact.
SPRUCE_AVX512BW bool qs8_dwconv_chw_avx512(const QS8DwParams& p, const int16_t* weights, const int32_t* bias,
                                           const float* scale, const QS8Output& out, const int8_t* input,
                                           int8_t* output, int32_t c_begin, int32_t c_end, int16_t* scratch) {
  const int32_t kh = p.kernel_h, kw = p.kernel_w, sw = p.stride_w;
  if (kh * kw > kMaxTaps || (sw != 1 && sw != 2)) return false;
  const int32_t pw = p.padded_w(), ph = p.padded_h();
  // Stride 2 keeps even and odd columns in two half planes, so that the taps
  // of 16 neighbouring outputs are 16 consecutive floats.
  const int32_t half_floats = (pw + 1) / 2 + 16;
  const int32_t row_floats = sw == 2 ? 2 * half_floats : pw + 16;
  float* plane = reinterpret_cast<float*>(scratch);
  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  const int64_t out_plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const __m512 lo = _mm512_set1_ps(out.lo), hi = _mm512_set1_ps(out.hi);
  const __m512i zp = _mm512_set1_epi32(out.zero_point);
  auto run = &channel_outputs<0, 0, 0>;
  if (kh == 3 && kw == 3) run = sw == 1 ? &channel_outputs<3, 3, 1> : &channel_outputs<3, 3, 2>;
  if (kh == 5 && kw == 5) run = sw == 1 ? &channel_outputs<5, 5, 1> : &channel_outputs<5, 5, 2>;
  for (int32_t c = c_begin; c < c_end; ++c) {
    const int8_t* x = input + c * in_plane;
    for (int32_t y = 0; y < ph; ++y) {
      float* row = plane + static_cast<int64_t>(y) * row_floats;
      const int32_t iy = y - p.pad_top;
      if (iy < 0 || iy >= p.in_h) {
        std::fill(row, row + row_floats, 0.0f);
        continue;
      }
      zero_pads(row, p.in_w, p.pad_left, pw, sw, half_floats);
      fill_row(x + static_cast<int64_t>(iy) * p.in_w, p.in_w, p.input_zero_point, p.pad_left, sw, half_floats, row);
    }
    __m512 wv[kMaxTaps];
    for (int32_t k = 0; k < kh * kw; ++k) wv[k] = _mm512_set1_ps(weights[static_cast<int64_t>(c) * kh * kw + k]);
    run(p, plane, row_floats, half_floats, wv, _mm512_set1_epi32(bias[c]), _mm512_set1_ps(scale[c]), lo, hi, zp,
        output + c * out_plane);
  }
  return true;
}

}  // namespace kernels
}  // namespace spruce

#endif
