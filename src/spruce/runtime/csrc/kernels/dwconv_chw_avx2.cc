// Depthwise convolution in CHW, AVX2 + FMA, for 3x3 and 5x5 at stride 1 and 2.
//
// Per channel and output row, 8 output columns at a time (stride 2 loads 16
// inputs and deinterleaves even and odd lanes, one load pair serving two taps).
// Most planes are first copied into a zero-padded buffer so every tap is a
// plain load (masked loads are slow on AMD cores): the rows kernel (7x7 to
// 56x56, unrolled for narrow rows) or the padded kernel (112x112); planes too
// big for a buffer take the direct kernel below, with masked loads at the
// borders. Consecutive vectors are independent, so out-of-order execution
// overlaps their FMA chains.
#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/simd_avx2.h"

#include <algorithm>
#include <type_traits>
#include <utility>

namespace spruce {
namespace kernels {
namespace {

// Lanes i of the 8 with 0 <= first + i < limit.
inline __m256i inside(int32_t first, int32_t limit) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_and_si256(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(-1)),
                          _mm256_cmpgt_epi32(_mm256_set1_epi32(limit), idx));
}

template <int K, int S>
void dwconv_channel(const DwConvParams& p, const float* w, float b, const float* in, float* out,
                    const avx2::Epilogue& epilogue) {
  const int32_t in_h = p.in_h, in_w = p.in_w, out_h = p.out_h(), out_w = p.out_w();
  // Columns whose K taps are all inside [0, in_w).
  int32_t ox_lo = (p.pad_left + S - 1) / S;
  int32_t ox_hi = in_w - K + p.pad_left >= 0 ? (in_w - K + p.pad_left) / S + 1 : 0;  // exclusive
  ox_hi = std::min(ox_hi, out_w);
  ox_lo = std::min(ox_lo, ox_hi);
  __m256 wv[K * K];
  for (int i = 0; i < K * K; ++i) wv[i] = _mm256_set1_ps(w[i]);
  const __m256 bv = _mm256_set1_ps(b);
  constexpr int kLoads = S == 1 ? K : 2 * ((K + 1) / 2);

  for (int32_t oy = 0; oy < out_h; ++oy) {
    const int32_t iy0 = oy * S - p.pad_top;
    const int32_t ky_lo = std::max(0, -iy0), ky_hi = std::min(K, in_h - iy0);
    float* orow = out + static_cast<int64_t>(oy) * out_w;
    for (int32_t ox = 0; ox < out_w; ox += 8) {
      const int n = std::min<int32_t>(8, out_w - ox);
      const int32_t base = ox * S - p.pad_left;  // input column of lane 0, tap 0
      __m256 acc = bv;
      if (n == 8 && ox >= ox_lo && ox + 8 <= ox_hi) {
        // Every tap of every lane is inside the row.
        for (int32_t ky = ky_lo; ky < ky_hi; ++ky) {
          const float* row = in + static_cast<int64_t>(iy0 + ky) * in_w + base;
          const __m256* wk = wv + ky * K;
          if (S == 1) {
            // Two partial sums halve the FMA dependency chain.
            __m256 odd = _mm256_mul_ps(_mm256_loadu_ps(row + 1), wk[1]);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(row), wk[0], acc);
            for (int kx = 2; kx < K; kx += 2) {
              acc = _mm256_fmadd_ps(_mm256_loadu_ps(row + kx), wk[kx], acc);
              if (kx + 1 < K) odd = _mm256_fmadd_ps(_mm256_loadu_ps(row + kx + 1), wk[kx + 1], odd);
            }
            acc = _mm256_add_ps(acc, odd);
          } else {
            for (int kx = 0; kx < K; kx += 2) {
              // The load pair must not pass the end of the input.
              const int32_t avail = in_w - (base + kx);
              __m256 lo, hi;
              if (avail >= 16) {
                lo = _mm256_loadu_ps(row + kx);
                hi = _mm256_loadu_ps(row + kx + 8);
              } else {
                lo = _mm256_maskload_ps(row + kx, avx2::tail_mask(std::max(0, std::min(avail, 8))));
                hi = _mm256_maskload_ps(row + kx + 8, avx2::tail_mask(std::max(0, std::min(avail - 8, 8))));
              }
              acc = _mm256_fmadd_ps(avx2::even_lanes(lo, hi), wk[kx], acc);
              if (kx + 1 < K) acc = _mm256_fmadd_ps(avx2::odd_lanes(lo, hi), wk[kx + 1], acc);
            }
          }
        }
      } else {
        // Border or short vector: masked loads read zeros outside the row
        // (the padding); masked-off lanes are never touched.
        __m256i masks[kLoads];
        if (S == 1) {
          for (int kx = 0; kx < K; ++kx) masks[kx] = inside(base + kx, in_w);
        } else {
          for (int kx = 0; kx < K; kx += 2) {
            masks[kx] = inside(base + kx, in_w);
            masks[kx + 1] = inside(base + kx + 8, in_w);
          }
        }
        for (int32_t ky = ky_lo; ky < ky_hi; ++ky) {
          const float* row = in + static_cast<int64_t>(iy0 + ky) * in_w;
          const __m256* wk = wv + ky * K;
          if (S == 1) {
            for (int kx = 0; kx < K; ++kx) {
              acc = _mm256_fmadd_ps(_mm256_maskload_ps(row + (base + kx), masks[kx]), wk[kx], acc);
            }
          } else {
            for (int kx = 0; kx < K; kx += 2) {
              const __m256 lo = _mm256_maskload_ps(row + (base + kx), masks[kx]);
              const __m256 hi = _mm256_maskload_ps(row + (base + kx + 8), masks[kx + 1]);
              acc = _mm256_fmadd_ps(avx2::even_lanes(lo, hi), wk[kx], acc);
              if (kx + 1 < K) acc = _mm256_fmadd_ps(avx2::odd_lanes(lo, hi), wk[kx + 1], acc);
            }
          }
        }
      }
      const __m256 y = epilogue(acc);
      if (n == 8) {
        _mm256_storeu_ps(orow + ox, y);
      } else {
        _mm256_maskstore_ps(orow + ox, avx2::tail_mask(n), y);
      }
    }
  }
}

// Narrow planes (14x14, 7x7, ...) have few vectors per row and most of them
// touch the border. For those the channel is copied into a zero-padded buffer
// on the stack, so every vector takes plain loads; the last vector of a row
// goes through a small buffer instead of a (slow on AMD) masked store.
constexpr int64_t kPaddedFloats = 16384;  // 64 KiB of stack

struct PaddedGeometry {
  int32_t rows = 0, stride = 0;  // padded plane: rows x stride floats
  bool fits = false;
};

// D (stride 2 only): rows stored deinterleaved, which pays off on wide rows.
template <int K, int S, bool D>
PaddedGeometry padded_geometry(const DwConvParams& p) {
  PaddedGeometry g;
  const int32_t vectors = (p.out_w() + 7) / 8;
  if (!D) {
    // Widest read: last vector's last lane, last tap (+8: stride 2's load pair).
    g.stride = ((vectors * 8 - 1) * S + K + (S == 2 ? 8 : 0) + 7) / 8 * 8;
    g.stride = std::max(g.stride, (p.pad_left + p.in_w + 7) / 8 * 8);
  } else {
    // Stride 2 rows are stored deinterleaved: even padded columns, then odd ones.
    int32_t half = std::max(vectors * 8 + K / 2, (p.pad_left + p.in_w + 1) / 2);
    half = (half + 7) / 8 * 8;
    g.stride = 2 * half;
  }
  g.rows = std::max(p.pad_top + p.in_h, (p.out_h() - 1) * S + K);
  g.fits = p.in_w <= 128 && static_cast<int64_t>(g.rows) * g.stride <= kPaddedFloats;
  return g;
}

// The 16 floats lo:hi of padded columns c.. (c = pad_left + a multiple of 16)
// into a stride-2 buffer row: even columns to even[col / 2], odd ones to
// odd[col / 2].
inline void store_deinterleaved(float* even, float* odd, int32_t c, __m256 lo, __m256 hi) {
  if (c % 2 == 0) {
    _mm256_storeu_ps(even + c / 2, avx2::even_lanes(lo, hi));
    _mm256_storeu_ps(odd + c / 2, avx2::odd_lanes(lo, hi));
  } else {
    _mm256_storeu_ps(odd + c / 2, avx2::even_lanes(lo, hi));
    _mm256_storeu_ps(even + c / 2 + 1, avx2::odd_lanes(lo, hi));
  }
}

// Input row -> padded row of a stride-2 buffer: padded column c = pad_left + x
// goes to dst[c / 2] if c is even, else to dst[half + c / 2]. Only data columns
// are written, so the padding keeps its zeros.
inline void copy_row_deinterleaved(const float* src, int32_t in_w, int32_t pad_left, int32_t half,
                                   float* dst) {
  float* even = dst;
  float* odd = dst + half;
  int32_t x = 0;
  for (; x + 16 <= in_w; x += 16) {
    store_deinterleaved(even, odd, pad_left + x, _mm256_loadu_ps(src + x), _mm256_loadu_ps(src + x + 8));
  }
  for (; x < in_w; ++x) {
    const int32_t c = pad_left + x;
    (c % 2 == 0 ? even : odd)[c / 2] = src[x];
  }
}

template <int K, int S, bool D, bool kHardSwish>
void dwconv_channel_padded(const DwConvParams& p, const PaddedGeometry& g, const float* w, float b,
                           float* padded, float* out, __m256 lo, __m256 hi) {
  const int32_t out_h = p.out_h(), out_w = p.out_w();
  __m256 wv[K * K];
  for (int i = 0; i < K * K; ++i) wv[i] = _mm256_set1_ps(w[i]);
  const __m256 bv = _mm256_set1_ps(b);
  alignas(32) float last[8];
  auto store = [&](float* orow, int32_t ox, __m256 y) {
    y = avx2::activate<kHardSwish>(y, lo, hi);
    if (ox + 8 <= out_w) {
      _mm256_storeu_ps(orow + ox, y);
    } else {
      _mm256_store_ps(last, y);
      for (int32_t j = 0; j < out_w - ox; ++j) orow[ox + j] = last[j];
    }
  };
  // Tap kx of the 8 outputs from column ox in padded row `row`.
  auto tap = [&](const float* row, int32_t ox, int kx) {
    if (S == 1) return _mm256_loadu_ps(row + ox + kx);
    if (D) return _mm256_loadu_ps(row + (kx % 2) * (g.stride / 2) + ox + kx / 2);
    return _mm256_setzero_ps();  // (S == 2 && !D: loaded in pairs below)
  };
  int32_t oy = 0;
  if (S == 1 || D) {
    // R output rows per pass: each input row's tap vectors are loaded once for
    // all of them (3x3: 5 input rows feed 3 outputs at stride 1, 5 feed 2 at
    // stride 2). One accumulator per output, taps in (ky, kx) order as in the
    // single-row loop below, so results do not depend on the grouping.
    constexpr int R = S == 1 ? 3 : 2;
    for (; oy + R <= out_h; oy += R) {
      const float* rows = padded + static_cast<int64_t>(oy) * S * g.stride;
      float* orow = out + static_cast<int64_t>(oy) * out_w;
      for (int32_t ox = 0; ox < out_w; ox += 8) {
        __m256 acc[R];
        for (int r = 0; r < R; ++r) acc[r] = bv;
        for (int i = 0; i < (R - 1) * S + K; ++i) {
          __m256 x[K];
          for (int kx = 0; kx < K; ++kx) x[kx] = tap(rows + i * g.stride, ox, kx);
          for (int r = 0; r < R; ++r) {
            const int ky = i - r * S;
            if (ky < 0 || ky >= K) continue;
            for (int kx = 0; kx < K; ++kx) acc[r] = _mm256_fmadd_ps(x[kx], wv[ky * K + kx], acc[r]);
          }
        }
        for (int r = 0; r < R; ++r) store(orow + static_cast<int64_t>(r) * out_w, ox, acc[r]);
      }
    }
  }
  for (; oy < out_h; ++oy) {
    const float* rows = padded + static_cast<int64_t>(oy) * S * g.stride;
    float* orow = out + static_cast<int64_t>(oy) * out_w;
    for (int32_t ox = 0; ox < out_w; ox += 8) {
      __m256 acc = bv;
      for (int ky = 0; ky < K; ++ky) {
        const float* row = rows + ky * g.stride;
        if (S == 2 && !D) {
          for (int kx = 0; kx < K; kx += 2) {
            const __m256 lo2 = _mm256_loadu_ps(row + 2 * ox + kx), hi2 = _mm256_loadu_ps(row + 2 * ox + kx + 8);
            acc = _mm256_fmadd_ps(avx2::even_lanes(lo2, hi2), wv[ky * K + kx], acc);
            if (kx + 1 < K) acc = _mm256_fmadd_ps(avx2::odd_lanes(lo2, hi2), wv[ky * K + kx + 1], acc);
          }
        } else {
          for (int kx = 0; kx < K; ++kx) acc = _mm256_fmadd_ps(tap(row, ox, kx), wv[ky * K + kx], acc);
        }
      }
      store(orow, ox, acc);
    }
  }
}

template <int K, int S, bool D, bool kHardSwish>
void dwconv_channels_padded(const DwConvParams& params, const PaddedGeometry& g, const float* weights,
                            const float* bias, const float* input, float* output, int32_t c_begin,
                            int32_t c_end, const avx2::Epilogue& epilogue) {
  const DwConvParams p = params;  // as in dwconv_channels_rows: no reloads per channel
  const __m256 lo = epilogue.lo, hi = epilogue.hi;
  const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
  alignas(32) float padded[kPaddedFloats + 8];  // + 8: slack for the last row's tail store
  // Zero once: every channel overwrites the same interior, the padding stays 0.
  std::fill(padded, padded + static_cast<int64_t>(g.rows) * g.stride, 0.0f);
  for (int32_t c = c_begin; c < c_end; ++c) {
    const float* in = input + c * in_plane;
    for (int32_t y = 0; y < p.in_h; ++y) {
      // Full 8-float stores: the zeros a row's tail writes past its end land
      // in padding (zero anyway) or in the next row, which is copied after.
      const float* src = in + static_cast<int64_t>(y) * p.in_w;
      float* dst = padded + static_cast<int64_t>(p.pad_top + y) * g.stride + p.pad_left;
      if (!D) {
        int32_t x = 0;
        for (; x + 8 <= p.in_w; x += 8) _mm256_storeu_ps(dst + x, _mm256_loadu_ps(src + x));
        if (x < p.in_w) _mm256_storeu_ps(dst + x, _mm256_maskload_ps(src + x, avx2::tail_mask(p.in_w - x)));
      } else {
        copy_row_deinterleaved(src, p.in_w, p.pad_left, g.stride / 2,
                               padded + static_cast<int64_t>(p.pad_top + y) * g.stride);
      }
    }
    dwconv_channel_padded<K, S, D, kHardSwish>(p, g, weights + static_cast<int64_t>(c) * K * K,
                                               bias != nullptr ? bias[c] : 0.0f, padded,
                                               output + c * out_plane, lo, hi);
  }
}

// Planes whose padded copy fits kRowsMaxFloats (7x7 to 28x28 outputs), or
// wider ones whose copy stays in L1 (56x56): each channel is copied into a
// zero-padded buffer, after which every tap is a plain load and nothing is
// masked (112x112 planes take the padded kernel above). At stride 2 a buffer row
// holds the even padded columns, then the odd ones, so tap kx of 8 consecutive
// outputs is again one load. R output rows per pass share their input rows'
// loads (3x3: 5 input rows feed 3 outputs at stride 1, 2 at stride 2).
// Per-channel work is small on narrow planes (14x14: 28 vectors, about 130
// cycles of FMAs), so overheads decide: for rows of up to kRowsMaxVectors
// vectors, V is a template argument and the copy, the loops and the buffer
// geometry are unrolled or constant (V = 0: read from the plane, for wider
// rows); a copy loop GCC could turn into a memcpy call per row is avoided; the
// activation is fixed at compile time; and each output keeps one accumulator,
// which leaves the 9 weights in registers (two chains per output spilled
// them). The vectors of a row go right to left, so a short last vector
// may write its spare lanes into the next row, which is written after it.
constexpr int32_t kRowsMaxVectors = 4;     // unrolled kernels for 1..4 vectors per row
constexpr int32_t kRowsMaxFloats = 16384;  // 64 KiB of stack
constexpr int32_t kRowsGeneralMaxFloats = 8192;  // 32 KiB: the general kernel's copy in L1

template <int K, int S>
struct RowsGeometry {
  int32_t vectors;  // output vectors per row
  int32_t half;     // floats per buffer row (per column parity at stride 2): >= 8 vectors + K - 1
  int32_t stride;   // floats from one buffer row to the next
  int32_t reads;    // input vectors (stride 1) or 16-float pairs (stride 2) the copy reads per row
  int32_t rows;     // buffer rows
  static constexpr int R = S == 1 ? 3 : 2;
  // Inline, so a compile-time `vectors` folds every field to a constant.
  static RowsGeometry of(const DwConvParams& p, int32_t vectors) {
    RowsGeometry g;
    g.vectors = vectors;
    g.half = (vectors + 1) * 8;
    g.stride = S == 1 ? g.half : 2 * g.half;
    g.reads = S == 1 ? (p.in_w + 7) / 8 : (p.in_w + 15) / 16;
    g.rows = std::max(p.pad_top + p.in_h, (p.out_h() - 1) * S + K);
    return g;
  }
  bool applies(const DwConvParams& p) const {
    // The copy's stores stay inside their row (their half at stride 2), so the
    // zeros they carry past the data only ever land on padding.
    const bool fits = S == 1 ? p.pad_left + p.in_w <= stride && reads * 8 <= stride
                             : (p.pad_left + 16 * reads) / 2 + 1 <= half;
    return p.stride == S && (p.out_w() + 7) / 8 == vectors && p.pad_left < 8 && reads <= vectors + 1 && fits &&
           static_cast<int64_t>(rows + 1) * stride <= kRowsMaxFloats;
  }
};

// Copies input row `src` into buffer row `dst` at padded column pad_left,
// reading whole vectors (zeroed past in_w) unless that would leave the range's
// input at in_end.
template <int K, int S, int V>
__attribute__((always_inline)) inline void rows_copy(const DwConvParams& p, const RowsGeometry<K, S>& g,
                                                     const float* src, const float* in_end, float* dst) {
  const int32_t in_w = p.in_w;
  auto read = [&](int32_t x) {
    if (x + 8 <= in_w) return _mm256_loadu_ps(src + x);
    const __m256i keep = avx2::tail_mask(std::max(0, in_w - x));
    return src + x + 8 <= in_end ? _mm256_and_ps(_mm256_loadu_ps(src + x), _mm256_castsi256_ps(keep))
                                 : _mm256_maskload_ps(src + x, keep);
  };
  // reads <= vectors + 1 (applies): with V fixed, a loop of known length.
  const int32_t max_reads = V > 0 ? V + 1 : g.reads;
  for (int32_t j = 0; j < max_reads; ++j) {
    if (j >= g.reads) break;
    if (S == 1) {
      _mm256_storeu_ps(dst + p.pad_left + 8 * j, read(8 * j));
    } else {
      store_deinterleaved(dst, dst + g.half, p.pad_left + 16 * j, read(16 * j), read(16 * j + 8));
    }
  }
}

// V > 0: exactly V vectors per output row; V = 0: any count that fits.
template <int K, int S, int V, bool kHardSwish>
void dwconv_channels_rows(const DwConvParams& params, const RowsGeometry<K, S>& geometry, const float* weights,
                          const float* bias, const float* input, float* output, int32_t c_begin, int32_t c_end,
                          const avx2::Epilogue& epilogue) {
  // A local copy: stores through intrinsics may alias anything reachable, so
  // fields read through the reference were reloaded, and out_h() / out_w()
  // recomputed with two divisions, for every channel.
  const DwConvParams p = params;
  using G = RowsGeometry<K, S>;
  const G g = V > 0 ? G::of(p, V) : geometry;
  constexpr int R = G::R;
  const __m256 lo = epilogue.lo, hi = epilogue.hi;
  const int32_t in_h = p.in_h, in_w = p.in_w, out_h = p.out_h(), out_w = p.out_w();
  const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
  const float* in_end = input + c_end * in_plane;
  // Tap kx of the 8 outputs from column 8 v, in buffer row `row`.
  auto tap = [&](const float* row, int32_t v, int kx) {
    if (S == 1) return _mm256_loadu_ps(row + 8 * v + kx);
    return _mm256_loadu_ps(row + (kx % 2) * g.half + 8 * v + kx / 2);
  };
  // + 1 row: the last row's copy may write zeros past it.
  alignas(32) float padded[kRowsMaxFloats];
  std::fill(padded, padded + static_cast<int64_t>(g.rows + 1) * g.stride, 0.0f);
  for (int32_t c = c_begin; c < c_end; ++c) {
    const float* in = input + c * in_plane;
    for (int32_t y = 0; y < in_h; ++y) {
      rows_copy<K, S, V>(p, g, in + static_cast<int64_t>(y) * in_w, in_end,
                         padded + static_cast<int64_t>(p.pad_top + y) * g.stride);
    }
    __m256 wv[K * K];
    for (int t = 0; t < K * K; ++t) wv[t] = _mm256_broadcast_ss(weights + static_cast<int64_t>(c) * K * K + t);
    const __m256 bv = bias != nullptr ? _mm256_broadcast_ss(bias + c) : _mm256_setzero_ps();
    float* out = output + c * out_plane;
    // Floats that may be written past the row being stored: the rest of the
    // plane (written after) and the spill room after it.
    const int64_t writable_end = static_cast<int64_t>(out_h) * out_w + p.spill_room(c, c_end);
    auto store = [&](int32_t oy, int32_t ox, __m256 y) {
      float* o = out + static_cast<int64_t>(oy) * out_w + ox;
      if (ox + 8 <= out_w || static_cast<int64_t>(oy) * out_w + ox + 8 <= writable_end) {
        _mm256_storeu_ps(o, y);
      } else {
        _mm256_maskstore_ps(o, avx2::tail_mask(out_w - ox), y);
      }
    };
    int32_t oy = 0;
    for (; oy + R <= out_h; oy += R) {
      const float* base = padded + static_cast<int64_t>(oy) * S * g.stride;
      for (int32_t v = g.vectors - 1; v >= 0; --v) {
        __m256 acc[R];
        for (int r = 0; r < R; ++r) acc[r] = bv;
        // Per output, taps in (ky, kx) order, as the single-row loop below.
        for (int i = 0; i < (R - 1) * S + K; ++i) {
          __m256 x[K];
          for (int kx = 0; kx < K; ++kx) x[kx] = tap(base + i * g.stride, v, kx);
          for (int r = 0; r < R; ++r) {
            const int ky = i - r * S;
            if (ky < 0 || ky >= K) continue;
            for (int kx = 0; kx < K; ++kx) acc[r] = _mm256_fmadd_ps(x[kx], wv[ky * K + kx], acc[r]);
          }
        }
        for (int r = 0; r < R; ++r) store(oy + r, 8 * v, avx2::activate<kHardSwish>(acc[r], lo, hi));
      }
    }
    for (; oy < out_h; ++oy) {
      const float* base = padded + static_cast<int64_t>(oy) * S * g.stride;
      for (int32_t v = g.vectors - 1; v >= 0; --v) {
        __m256 acc = bv;
        for (int ky = 0; ky < K; ++ky) {
          for (int kx = 0; kx < K; ++kx) acc = _mm256_fmadd_ps(tap(base + ky * g.stride, v, kx), wv[ky * K + kx], acc);
        }
        store(oy, 8 * v, avx2::activate<kHardSwish>(acc, lo, hi));
      }
    }
  }
}

// Runs the rows kernel if the plane's padded copy fits: unrolled for rows of
// V = 1..kRowsMaxVectors vectors, else the general one.
template <int K, int S, int... V>
bool dwconv_rows_dispatch(const DwConvParams& p, const float* weights, const float* bias,
                          const float* input, float* output, int32_t c_begin, int32_t c_end,
                          const avx2::Epilogue& epilogue, std::integer_sequence<int, V...>) {
  using G = RowsGeometry<K, S>;
  const G g = G::of(p, (p.out_w() + 7) / 8);
  if (!g.applies(p)) return false;
  auto run = [&](auto v) {
    constexpr int kV = decltype(v)::value;
    if (epilogue.hard_swish) {
      dwconv_channels_rows<K, S, kV, true>(p, g, weights, bias, input, output, c_begin, c_end, epilogue);
    } else {
      dwconv_channels_rows<K, S, kV, false>(p, g, weights, bias, input, output, c_begin, c_end, epilogue);
    }
  };
  bool done = false;
  auto try_one = [&](auto v) {
    if (decltype(v)::value > 0 && !done && decltype(v)::value == g.vectors) {
      run(v);
      done = true;
    }
  };
  (try_one(std::integral_constant<int, V>{}), ...);
  if (done) return true;
  // Wider rows: only while the padded copy stays in L1; beyond it the padded
  // kernel below is faster.
  if (static_cast<int64_t>(g.rows + 1) * g.stride > kRowsGeneralMaxFloats) return false;
  run(std::integral_constant<int, 0>{});
  return true;
}

template <int K, int S, bool D>
void run_padded(const DwConvParams& p, const PaddedGeometry& g, const float* weights, const float* bias,
                const float* input, float* output, int32_t c_begin, int32_t c_end,
                const avx2::Epilogue& epilogue) {
  if (epilogue.hard_swish) {
    dwconv_channels_padded<K, S, D, true>(p, g, weights, bias, input, output, c_begin, c_end, epilogue);
  } else {
    dwconv_channels_padded<K, S, D, false>(p, g, weights, bias, input, output, c_begin, c_end, epilogue);
  }
}

template <int K, int S>
void dwconv_channels(const DwConvParams& p, const float* weights, const float* bias,
                     const float* input, float* output, int32_t c_begin, int32_t c_end,
                     const Activation& act) {
  const avx2::Epilogue epilogue(act);
  const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
  if (dwconv_rows_dispatch<K, S>(p, weights, bias, input, output, c_begin, c_end, epilogue,
                                 std::make_integer_sequence<int, kRowsMaxVectors + 1>{})) {
    return;
  }
  if constexpr (S == 2) {
    if (p.in_w >= 32) {
      const PaddedGeometry g = padded_geometry<K, S, true>(p);
      if (g.fits) {
        run_padded<K, S, true>(p, g, weights, bias, input, output, c_begin, c_end, epilogue);
        return;
      }
    }
  }
  const PaddedGeometry g = padded_geometry<K, S, false>(p);
  if (g.fits) {
    run_padded<K, S, false>(p, g, weights, bias, input, output, c_begin, c_end, epilogue);
    return;
  }
  for (int32_t c = c_begin; c < c_end; ++c) {
    dwconv_channel<K, S>(p, weights + static_cast<int64_t>(c) * K * K,
                         bias != nullptr ? bias[c] : 0.0f, input + c * in_plane,
                         output + c * out_plane, epilogue);
  }
}

}  // namespace

bool dwconv_chw_avx2(const DwConvParams& p, const float* weights, const float* bias,
                     const float* input, float* output, int32_t c_begin, int32_t c_end,
                     const Activation& act) {
  const int key = p.kernel * 10 + p.stride;
  switch (key) {
    case 31: dwconv_channels<3, 1>(p, weights, bias, input, output, c_begin, c_end, act); return true;
    case 32: dwconv_channels<3, 2>(p, weights, bias, input, output, c_begin, c_end, act); return true;
    case 51: dwconv_channels<5, 1>(p, weights, bias, input, output, c_begin, c_end, act); return true;
    case 52: dwconv_channels<5, 2>(p, weights, bias, input, output, c_begin, c_end, act); return true;
    default: return false;
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX2__ && __FMA__
