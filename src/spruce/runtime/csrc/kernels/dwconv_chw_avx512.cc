// Depthwise convolution in CHW, AVX-512, for 3x3 and 5x5 at stride 1 and 2.
//
// The AVX2 kernels copy each plane into a zero-padded buffer because AVX2's
// masked loads are slow; AVX-512's cost what a plain load does, so this kernel
// reads the plane in place: every tap is a load of 16 columns under a mask that
// drops the columns outside the row, which gives the padding's zeros. Rows
// above or below the image are zero vectors. Output rows in a step share
// their input rows' loads (dw_dispatch has the step sizes). 3x3 at stride 2
// splits each input row's 32 columns into even and odd lanes once (taps 0 and
// 1) and shifts the even lanes by one for tap 2, with unmasked loads away from
// the borders; 5x5 at stride 2 loads 32 columns per tap pair and splits them
// into even and odd lanes. Each output adds its taps in (ky, kx) order into
// one accumulator, zeros of the padding included, as the AVX2 kernels' padded
// copies do, so it gives their bits.
#if defined(__AVX512F__) && defined(__FMA__)
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/epilogue_avx512.h"

namespace spruce {
namespace kernels {
namespace {

// Lanes j with lo <= j < hi (clamped to 0..16).
inline __mmask16 lanes(int32_t lo, int32_t hi) {
  lo = std::max(lo, 0);
  hi = std::min(hi, 16);
  if (lo >= hi) return 0;
  const uint32_t upto = hi >= 16 ? 0xffffu : (1u << hi) - 1u;
  return static_cast<__mmask16>(upto & ~((1u << lo) - 1u));
}

// Input columns a 3x3 stride-2 vector reads from its lane 0's tap 0: 32 for
// taps 0 and 1, one more for tap 2.
constexpr int32_t kSpan3S2 = 33;

// Output rows [0, RR) x U vectors from column ox: RR * U accumulators, so
// enough FMA chains are in flight to cover the FMA latency (each output's
// taps are one dependent chain). kInside: every tap of every lane is inside
// the image and every lane is an output, so loads and stores need no masks
// (3x3 at stride 2 only, see dw_rows).
template <int K, int S, int RR, int U, bool kInside, int kAct>
inline void dw_block(const float* in, int32_t in_h, int32_t in_w, int32_t out_w, int32_t iy0, int32_t pad_left,
                     int32_t ox, const __m512* wv, __m512 bv, float* out, __m512 lo, __m512 hi) {
  constexpr int kRows = (RR - 1) * S + K;
  const __m512i even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  // The masks of each load: S == 1, tap kx's; 3x3 at S == 2, the 16 columns
  // at offsets 0 and 16 and the one at 32; 5x5 at S == 2, the two 16-column
  // loads of tap pair kx (even kx).
  __mmask16 m[U][K + 1];
  if (!kInside) {
    for (int u = 0; u < U; ++u) {
      const int32_t first = (ox + 16 * u) * S - pad_left;  // input column of lane 0, tap 0
      if (S == 1) {
        for (int kx = 0; kx < K; ++kx) m[u][kx] = lanes(-(first + kx), in_w - (first + kx));
      } else if (K == 3) {
        m[u][0] = lanes(-first, in_w - first);
        m[u][1] = lanes(-(first + 16), in_w - (first + 16));
        m[u][2] = lanes(-(first + 32), in_w - (first + 32)) & 1;
      } else {
        for (int kx = 0; kx < K; kx += 2) {
          m[u][kx] = lanes(-(first + kx), in_w - (first + kx));
          m[u][kx + 1] = lanes(-(first + kx + 16), in_w - (first + kx + 16));
        }
      }
    }
  }
  auto load = [&](const float* p, int u, int j) {  // (3x3 at stride 2)
    if (!kInside) return _mm512_maskz_loadu_ps(m[u][j], p);
    // Keeps the vector in a register: folded into each FMA that uses it, the
    // load would be repeated for every output row the input row feeds.
    __m512 v = _mm512_loadu_ps(p);
    __asm__("" : "+v"(v));
    return v;
  };
  __m512 acc[RR][U];
  for (int r = 0; r < RR; ++r) {
    for (int u = 0; u < U; ++u) acc[r][u] = bv;
  }
  for (int i = 0; i < kRows; ++i) {
    const int32_t iy = iy0 + i;
    const bool inside = kInside || (iy >= 0 && iy < in_h);
    __m512 x[U][K];
    for (int u = 0; u < U; ++u) {
      const float* row = inside ? in + static_cast<int64_t>(iy) * in_w + (ox + 16 * u) * S - pad_left : in;
      if (!inside) {
        for (int kx = 0; kx < K; ++kx) x[u][kx] = _mm512_setzero_ps();
      } else if (S == 1) {
        for (int kx = 0; kx < K; ++kx) x[u][kx] = _mm512_maskz_loadu_ps(m[u][kx], row + kx);
      } else if (K == 3) {
        // Columns 0..31 split into even (tap 0) and odd (tap 1) lanes once;
        // tap 2 is the even lanes moved down one, column 32 entering at the top.
        const __m512 a = load(row, u, 0), b = load(row + 16, u, 1);
        const __m512 c = kInside ? _mm512_castps128_ps512(_mm_load_ss(row + 32))
                                 : _mm512_maskz_loadu_ps(m[u][2], row + 32);
        x[u][0] = _mm512_permutex2var_ps(a, even_idx, b);
        x[u][1] = _mm512_permutex2var_ps(a, odd_idx, b);
        x[u][2] = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(c), _mm512_castps_si512(x[u][0]), 1));
      } else {
        for (int kx = 0; kx < K; kx += 2) {
          const __m512 a = _mm512_maskz_loadu_ps(m[u][kx], row + kx);
          const __m512 b = _mm512_maskz_loadu_ps(m[u][kx + 1], row + kx + 16);
          x[u][kx] = _mm512_permutex2var_ps(a, even_idx, b);
          if (kx + 1 < K) x[u][kx + 1] = _mm512_permutex2var_ps(a, odd_idx, b);
        }
      }
    }
    for (int r = 0; r < RR; ++r) {
      const int ky = i - r * S;
      if (ky < 0 || ky >= K) continue;
      for (int kx = 0; kx < K; ++kx) {
        for (int u = 0; u < U; ++u) acc[r][u] = _mm512_fmadd_ps(x[u][kx], wv[ky * K + kx], acc[r][u]);
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    const __mmask16 store_mask = kInside ? __mmask16(0xffff) : lanes(0, out_w - ox - 16 * u);
    for (int r = 0; r < RR; ++r) {
      _mm512_mask_storeu_ps(out + static_cast<int64_t>(r) * out_w + ox + 16 * u, store_mask,
                            avx512::finish<kAct>(acc[r][u], lo, hi));
    }
  }
}

// Output rows [0, RR): U vectors at a time, then one at a time. At 3x3
// stride 2, blocks whose taps all fall inside the image take the unmasked
// block; stride 1 and 5x5 kernels keep the masked one, which ran faster for
// them on 56x56 planes.
template <int K, int S, int RR, int U, int kAct>
inline void dw_rows(const float* in, int32_t in_h, int32_t in_w, int32_t out_w, int32_t iy0, int32_t pad_left,
                    const __m512* wv, __m512 bv, float* out, __m512 lo, __m512 hi) {
  constexpr int kRows = (RR - 1) * S + K;
  const bool rows_inside = iy0 >= 0 && iy0 + kRows <= in_h;
  auto block = [&](auto n, int32_t ox) {
    constexpr int kU = decltype(n)::value;
    if constexpr (K == 3 && S == 2) {
      if (rows_inside && 2 * ox - pad_left >= 0 && 2 * (ox + 16 * (kU - 1)) - pad_left + kSpan3S2 <= in_w &&
          ox + 16 * kU <= out_w) {
        dw_block<K, S, RR, kU, true, kAct>(in, in_h, in_w, out_w, iy0, pad_left, ox, wv, bv, out, lo, hi);
        return;
      }
    }
    dw_block<K, S, RR, kU, false, kAct>(in, in_h, in_w, out_w, iy0, pad_left, ox, wv, bv, out, lo, hi);
  };
  int32_t ox = 0;
  for (; ox + 16 * (U - 1) < out_w; ox += 16 * U) block(std::integral_constant<int, U>{}, ox);
  for (; ox < out_w; ox += 16) block(std::integral_constant<int, 1>{}, ox);
}

template <int K, int S, int U, int R1, int R2, int kAct>
void dw_channels(const DwConvParams& params, const float* weights, const float* bias, const float* input,
                 float* output, int32_t c_begin, int32_t c_end, __m512 lo, __m512 hi) {
  const DwConvParams p = params;  // a local copy: no reloads through the reference per store
  constexpr int R = S == 1 ? R1 : R2;
  const int32_t in_h = p.in_h, in_w = p.in_w, out_h = p.out_h(), out_w = p.out_w();
  const int64_t in_plane = p.in_plane(), out_plane = p.out_plane();
  for (int32_t c = c_begin; c < c_end; ++c) {
    const float* in = input + c * in_plane;
    float* out = output + c * out_plane;
    __m512 wv[K * K];
    for (int t = 0; t < K * K; ++t) wv[t] = _mm512_set1_ps(weights[static_cast<int64_t>(c) * K * K + t]);
    const __m512 bv = bias != nullptr ? _mm512_set1_ps(bias[c]) : _mm512_setzero_ps();
    int32_t oy = 0;
    for (; oy + R <= out_h; oy += R) {
      dw_rows<K, S, R, U, kAct>(in, in_h, in_w, out_w, oy * S - p.pad_top, p.pad_left, wv, bv,
                                out + static_cast<int64_t>(oy) * out_w, lo, hi);
    }
    for (; oy < out_h; ++oy) {
      dw_rows<K, S, 1, U, kAct>(in, in_h, in_w, out_w, oy * S - p.pad_top, p.pad_left, wv, bv,
                                out + static_cast<int64_t>(oy) * out_w, lo, hi);
    }
  }
}

// 3x3: one vector and 3 rows (stride 1) or 2 (stride 2) per step; 5x5: two
// vectors and 4 or 3 rows, whose 25-tap chains need more of them in flight.
template <int K, int S>
void dw_dispatch(const DwConvParams& p, const float* weights, const float* bias, const float* input, float* output,
                 int32_t c_begin, int32_t c_end, const Activation& act, bool swish) {
  constexpr int U = K == 3 ? 1 : 2, R1 = K == 3 ? 3 : 4, R2 = K == 3 ? 2 : 3;
  const avx512::Epilogue e(act);
  if (swish) {
    dw_channels<K, S, U, R1, R2, avx512::kClampSwish>(p, weights, bias, input, output, c_begin, c_end, e.lo, e.hi);
  } else if (e.hard_swish) {
    dw_channels<K, S, U, R1, R2, avx512::kHardSwishClamp>(p, weights, bias, input, output, c_begin, c_end, e.lo,
                                                          e.hi);
  } else {
    dw_channels<K, S, U, R1, R2, avx512::kClamp>(p, weights, bias, input, output, c_begin, c_end, e.lo, e.hi);
  }
}

// Small planes at stride 1 whose output rows are as wide as the input's: a
// plane is then one run of pixels, tap (ky, kx) of output pixel q is input
// pixel q + (ky - pad_top) * in_w + kx - pad_left, and each vector of 16
// outputs takes a tap as one load under a mask that drops the lanes whose tap
// falls in the padding. Vectors span rows, so a 7x7 plane is 4 vectors where
// rows would take 7 (of 8 lanes in AVX2, of 16 here); small planes run NC = 2
// channels at a time so that enough FMA chains are in flight. The masks
// depend on the geometry only and are built once per call.
constexpr int kFlatMaxVectors = 16;  // planes up to 256 pixels (14x14, 7x7)

struct FlatGeometry {
  int32_t vectors = 0, pixels = 0;
  int64_t in_plane = 0, out_plane = 0;
  int32_t tap_offset[25];                        // per tap, input pixel of output pixel 0
  __mmask16 masks[kFlatMaxVectors * 25];         // [vector][tap]
};

template <int K>
void flat_geometry(const DwConvParams& p, FlatGeometry& g) {
  const int32_t out_w = p.out_w();
  g.pixels = p.out_h() * out_w;
  g.vectors = (g.pixels + 15) / 16;
  g.in_plane = p.in_plane();
  g.out_plane = p.out_plane();
  for (int ky = 0; ky < K; ++ky) {
    for (int kx = 0; kx < K; ++kx) g.tap_offset[ky * K + kx] = (ky - p.pad_top) * p.in_w + kx - p.pad_left;
  }
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i zero = _mm512_setzero_si512();
  for (int32_t v = 0; v < g.vectors; ++v) {
    const __m512i q = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * v));
    const __mmask16 live = avx512::tail_mask(std::min(16, g.pixels - 16 * v));
    // Output row and column of each lane (q / out_w through float: exact for
    // these small planes, and a lane past the plane is masked anyway).
    const __m512i oy = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(static_cast<float>(out_w))));
    const __m512i ox = _mm512_sub_epi32(q, _mm512_mullo_epi32(oy, _mm512_set1_epi32(out_w)));
    __mmask16 rows[K], cols[K];
    for (int k = 0; k < K; ++k) {
      const __m512i iy = _mm512_add_epi32(oy, _mm512_set1_epi32(k - p.pad_top));
      const __m512i ix = _mm512_add_epi32(ox, _mm512_set1_epi32(k - p.pad_left));
      rows[k] = _mm512_mask_cmplt_epi32_mask(_mm512_cmpge_epi32_mask(iy, zero), iy, _mm512_set1_epi32(p.in_h));
      cols[k] = _mm512_mask_cmplt_epi32_mask(_mm512_cmpge_epi32_mask(ix, zero), ix, _mm512_set1_epi32(p.in_w));
    }
    for (int ky = 0; ky < K; ++ky) {
      for (int kx = 0; kx < K; ++kx) g.masks[v * K * K + ky * K + kx] = live & rows[ky] & cols[kx];
    }
  }
}

// Channels [c, c + NC) x vectors [v0, v0 + U): taps in (ky, kx) order into one
// accumulator per output, the masked lanes adding the padding's zeros.
template <int K, int NC, int U, int kAct>
inline void flat_block(const FlatGeometry& g, const float* weights, const float* bias, const float* input,
                       float* output, int32_t c, int32_t v0, __m512 lo, __m512 hi) {
  __m512 acc[NC][U];
  for (int n = 0; n < NC; ++n) {
    const __m512 bv = bias != nullptr ? _mm512_set1_ps(bias[c + n]) : _mm512_setzero_ps();
    for (int u = 0; u < U; ++u) acc[n][u] = bv;
  }
  const float* in[NC];
  for (int n = 0; n < NC; ++n) in[n] = input + (c + n) * g.in_plane + 16 * v0;
  const __mmask16* m = g.masks + v0 * K * K;
  for (int t = 0; t < K * K; ++t) {
    const int32_t off = g.tap_offset[t];
    for (int n = 0; n < NC; ++n) {
      const __m512 wv = _mm512_set1_ps(weights[static_cast<int64_t>(c + n) * K * K + t]);
      for (int u = 0; u < U; ++u) {
        const __m512 x = _mm512_maskz_loadu_ps(m[u * K * K + t], in[n] + 16 * u + off);
        acc[n][u] = _mm512_fmadd_ps(x, wv, acc[n][u]);
      }
    }
  }
  for (int n = 0; n < NC; ++n) {
    float* out = output + (c + n) * g.out_plane + 16 * v0;
    for (int u = 0; u < U; ++u) {
      const __mmask16 live = avx512::tail_mask(std::min(16, g.pixels - 16 * (v0 + u)));
      _mm512_mask_storeu_ps(out + 16 * u, live, avx512::finish<kAct>(acc[n][u], lo, hi));
    }
  }
}

template <int K, int NC, int kAct>
inline void flat_vectors(const FlatGeometry& g, const float* weights, const float* bias, const float* input,
                         float* output, int32_t c, __m512 lo, __m512 hi) {
  constexpr int kMaxU = NC == 2 ? 4 : 8;
  int32_t v = 0;
  for (; v + kMaxU <= g.vectors; v += kMaxU) {
    flat_block<K, NC, kMaxU, kAct>(g, weights, bias, input, output, c, v, lo, hi);
  }
  switch (g.vectors - v) {
    case 0: break;
    case 1: flat_block<K, NC, 1, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
    case 2: flat_block<K, NC, 2, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
    case 3: flat_block<K, NC, 3, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
    case 4: flat_block<K, NC, 4, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
    case 5: flat_block<K, NC, 5, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
    case 6: flat_block<K, NC, 6, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
    default: flat_block<K, NC, 7, kAct>(g, weights, bias, input, output, c, v, lo, hi); break;
  }
}

template <int K, int kAct>
void flat_channels(const FlatGeometry& g, const float* weights, const float* bias, const float* input,
                   float* output, int32_t c_begin, int32_t c_end, __m512 lo, __m512 hi) {
  int32_t c = c_begin;
  if (g.vectors <= 4) {
    for (; c + 2 <= c_end; c += 2) flat_vectors<K, 2, kAct>(g, weights, bias, input, output, c, lo, hi);
  }
  for (; c < c_end; ++c) flat_vectors<K, 1, kAct>(g, weights, bias, input, output, c, lo, hi);
}

template <int K>
void flat_dispatch(const DwConvParams& p, const float* weights, const float* bias, const float* input, float* output,
                   int32_t c_begin, int32_t c_end, const Activation& act, bool swish) {
  FlatGeometry g;
  flat_geometry<K>(p, g);
  const avx512::Epilogue e(act);
  if (swish) {
    flat_channels<K, avx512::kClampSwish>(g, weights, bias, input, output, c_begin, c_end, e.lo, e.hi);
  } else if (e.hard_swish) {
    flat_channels<K, avx512::kHardSwishClamp>(g, weights, bias, input, output, c_begin, c_end, e.lo, e.hi);
  } else {
    flat_channels<K, avx512::kClamp>(g, weights, bias, input, output, c_begin, c_end, e.lo, e.hi);
  }
}

}  // namespace

bool dwconv_chw_avx512(const DwConvParams& p, const float* weights, const float* bias, const float* input,
                       float* output, int32_t c_begin, int32_t c_end, const Activation& act, bool swish) {
  // Narrow rows leave most of a 16-lane vector idle (7 of 16 on a 7x7
  // plane), where the AVX2 kernels fill 8-lane vectors from a padded copy.
  const int32_t min_out_w = p.kernel == 5 ? kDw512MinOutW5 : p.stride == 2 ? kDw512MinOutW3S2 : kDw512MinOutW3S1;
  const bool flat = p.stride == 1 && p.out_w() == p.in_w &&
                    static_cast<int64_t>(p.out_h()) * p.out_w() <= 16 * kFlatMaxVectors;
  if (flat && (p.kernel == 3 || p.kernel == 5)) {
    if (p.kernel == 3) {
      flat_dispatch<3>(p, weights, bias, input, output, c_begin, c_end, act, swish);
    } else {
      flat_dispatch<5>(p, weights, bias, input, output, c_begin, c_end, act, swish);
    }
    return true;
  }
  if (p.out_w() < min_out_w) return false;
  switch (p.kernel * 10 + p.stride) {
    case 31: dw_dispatch<3, 1>(p, weights, bias, input, output, c_begin, c_end, act, swish); return true;
    case 32: dw_dispatch<3, 2>(p, weights, bias, input, output, c_begin, c_end, act, swish); return true;
    case 51: dw_dispatch<5, 1>(p, weights, bias, input, output, c_begin, c_end, act, swish); return true;
    case 52: dw_dispatch<5, 2>(p, weights, bias, input, output, c_begin, c_end, act, swish); return true;
    default: return false;
  }
}

}  // namespace kernels
}  // namespace spruce
#endif  // __AVX512F__ && __FMA__
