// AVX-512 int8 depthwise convolution (see qs8.h). The padded plane holds the
// values x - zero point as float32: every product of an int8 weight and such a
// value, and every sum of up to 25 of them, is an integer below 2^24, so float
// FMAs give the exact int32 sum that the portable kernel forms.
#include "kernels/kernels_impl.h"

#if SPRUCE_X86_KERNELS && defined(__AVX512F__)
#include <immintrin.h>

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

}  // namespace

// False (nothing done) for kernels the float sums would not keep exact.
__attribute__((target("avx512f,avx512bw,avx512vl"))) bool qs8_dwconv_chw_avx512(const QS8DwParams& p, const int16_t* weights, const int32_t* bias,
                           const float* scale, const QS8Output& out, const int8_t* input, int8_t* output,
                           int32_t c_begin, int32_t c_end, int16_t* scratch) {
  const int32_t kh = p.kernel_h, kw = p.kernel_w, sw = p.stride_w;
  if (kh * kw > kMaxTaps || (sw != 1 && sw != 2)) return false;
  const int32_t pw = p.padded_w(), ph = p.padded_h();
  // Stride 2 keeps even and odd columns in two half planes, so that the taps
  // of 16 neighbouring outputs are 16 consecutive floats.
  const int32_t half = (pw + 1) / 2;
  const int32_t row_floats = sw == 2 ? 2 * (half + 16) : pw + 16;
  float* plane = reinterpret_cast<float*>(scratch);
  const int64_t in_plane = static_cast<int64_t>(p.in_h) * p.in_w;
  const int64_t out_plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const __m512 lo = _mm512_set1_ps(out.lo), hi = _mm512_set1_ps(out.hi);
  const __m512i zp = _mm512_set1_epi32(out.zero_point);
  for (int32_t c = c_begin; c < c_end; ++c) {
    const int8_t* x = input + c * in_plane;
    for (int32_t y = 0; y < ph; ++y) {
      float* row = plane + static_cast<int64_t>(y) * row_floats;
      std::fill(row, row + row_floats, 0.0f);
      const int32_t iy = y - p.pad_top;
      if (iy < 0 || iy >= p.in_h) continue;
      fill_row(x + static_cast<int64_t>(iy) * p.in_w, p.in_w, p.input_zero_point, p.pad_left, sw, half + 16, row);
    }
    __m512 wv[kMaxTaps];
    for (int32_t k = 0; k < kh * kw; ++k) wv[k] = _mm512_set1_ps(weights[static_cast<int64_t>(c) * kh * kw + k]);
    const __m512i b = _mm512_set1_epi32(bias[c]);
    const __m512 s = _mm512_set1_ps(scale[c]);
    int8_t* yc = output + c * out_plane;
    for (int32_t oy = 0; oy < p.out_h; ++oy) {
      for (int32_t ox = 0; ox < p.out_w; ox += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int32_t ky = 0; ky < kh; ++ky) {
          const float* row = plane + static_cast<int64_t>(oy * p.stride_h + ky) * row_floats;
          for (int32_t kx = 0; kx < kw; ++kx) {
            const float* src = sw == 2 ? row + (kx & 1) * (half + 16) + kx / 2 + ox : row + kx + ox;
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(src), wv[ky * kw + kx], acc);
          }
        }
        const __m512i sum = _mm512_add_epi32(_mm512_cvtps_epi32(acc), b);
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), s);
        f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
        const __m128i q = _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(f), zp));
        const int32_t n = std::min(16, p.out_w - ox);
        int8_t* dst = yc + static_cast<int64_t>(oy) * p.out_w + ox;
        _mm_mask_storeu_epi8(dst, first(n), q);
      }
    }
  }
  return true;
}

}  // namespace kernels
}  // namespace spruce

#endif
