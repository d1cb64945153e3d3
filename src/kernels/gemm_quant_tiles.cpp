// The quantized products of a server's batched decoding step (gemm_quant.cpp hands over from
// kQ8TileRows / kQ4TileRows rows of A, gemm_quant_rows.h): tiles of two weight rows by every row
// of A, with the same bits per (row, weight row) as gemm_quant.cpp's one-weight-row kernels
// (Q8_0: two blocks per register; Q4_0: four blocks per step, AVX-512 VBMI), so a request decodes
// the same tokens alone or batched.
//
// Why another kernel. The one-weight-row kernel spends, per row of A and pair of blocks, a
// masked negation (the sign trick: |w| times sign(w) a), a 64-bit scale load, a scalar-pair
// multiply and a lane permute besides the dot product, conversion and FMA; its rows of A come
// through pointer arrays that left the compiler short of registers; it takes 4 rows per pass, so
// 8 rows meant two passes over every unpacked weight block. With 8 rows it ran at ~0.3 groups
// of 64 multiply-adds per cycle on the AMD EPYC (Zen 5) measured, where a loop of just the
// dot product, conversion, scale multiply and FMA sustains ~1.
//
// Here the activations go unsigned instead of the weights: a + 128 as u8 (once per GEMM), so
// vpdpbusd multiplies them with the weights as they are, and each weight lane's 128 x sum(w) (one
// more vpdpbusd per weight block pair, shared by all rows) takes the excess off: (a + 128) . w -
// 128 sum(w) = a . w exactly, lane by lane, the very int32 partial sums of the sign trick. The
// activations' scales come widened to the lanes of their block (16 floats per pair), so a
// lane's scale is one multiply of two registers, dw x da, the same fp32 product as before; the
// conversion and the FMA into a 512-bit accumulator per (row, weight row) are the old kernel's,
// pair after pair, then its odd last block on the low half and its horizontal sum. The rows of
// A are laid out pair-major (pair p: row 0's 64 bytes, row 1's, ...), so one pointer walks them
// all. One thread, 120 q8_0 matrices of 1408 x 512 streamed from memory, 8 rows: 13.6-13.8 ms a
// pass before, 7.5 after; q4_0 12.1-12.9 -> 5.7-5.8 (bench/RESULTS.md, "Batched quantized
// decoding").
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/gemm.h"
#include "kernels/gemm_quant_rows.h"

namespace chainlm {

#if defined(CHAINLM_QUANT_AVX512)

namespace {

// The int32 lanes of w . a for a pair of blocks (lanes 0-7 the first block's, 8-15 the
// second's), from the unsigned activations x = a + 128 and -128 sum(w) per lane (minus128w).
inline __m512i pair_dot(__m512i minus128w, __m512i x, __m512i wq) {
  return _mm512_dpbusd_epi32(minus128w, x, wq);
}

// w, after asking for the two lines `ahead` bytes on, where a later tile reads (a step of
// either tile kernel reads 68 or 72 bytes of each weight row).
inline const uint8_t* fetch_ahead(const uint8_t* w, size_t ahead) {
  __builtin_prefetch(w + ahead, 0, 3);
  __builtin_prefetch(w + ahead + 64, 0, 3);
  return w;
}

// R rows of A against NW weight rows w, w + b_row, ...: out[r * NW + j].
template <int R, int NW>
[[gnu::noinline]] void tile(const uint8_t* w, size_t b_row, const QuantizedRows& a, float* out) {
  const int nb = a.nb, pairs = nb / 2;
  const __m512i pair_lanes = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i u128 = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[NW][R];
  for (int j = 0; j < NW; ++j)
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  // Weights are fetched where a later tile reads at this offset: 8 blocks ahead in the same row
  // came too late to hide memory's latency (bench/quant_few_row_bench.cpp, 8 rows, ms a pass of
  // 120 matrices: 512 x 1408 12.0-13.5 that way, 6.6-7.2 one tile ahead). Short rows (K = 512: 8
  // pairs a tile) go two tiles ahead: 8.2-8.5 against 9.0-9.7 one tile ahead.
  const size_t ahead = (nb >= 32 ? NW : 2 * NW) * b_row;
  const uint8_t* u = a.u8_pairs;
  const float* d = a.d_pairs;
  const uint8_t* wp = w;
  for (int p = 0; p < pairs; ++p, u += R * 64, d += R * 16, wp += 2 * 34) {
    __m512i wq[NW], minus128w[NW];
    __m512 dw[NW];
    for (int j = 0; j < NW; ++j) {
      const uint8_t* w0 = fetch_ahead(wp + j * b_row, ahead);
      wq[j] =
          _mm512_inserti64x4(_mm512_castsi256_si512(weights_q8_0(w0)), weights_q8_0(w0 + 34), 1);
      minus128w[j] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                      _mm512_dpbusd_epi32(_mm512_setzero_si512(), u128, wq[j]));
      uint16_t h0, h1;
      std::memcpy(&h0, w0, 2);
      std::memcpy(&h1, w0 + 34, 2);
      dw[j] = _mm512_permutexvar_ps(
          pair_lanes,
          _mm512_castps128_ps512(_mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(h0), h1, 1))));
    }
    for (int r = 0; r < R; ++r) {
      const __m512i x = _mm512_loadu_si512(u + r * 64);
      const __m512 da = _mm512_loadu_ps(d + r * 16);
      for (int j = 0; j < NW; ++j)
        acc[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair_dot(minus128w[j], x, wq[j])),
                                    _mm512_mul_ps(dw[j], da), acc[j][r]);
    }
  }
  static_assert(R * NW <= 16);
  __m512 x[16];
  for (int i = R * NW; i < 16; ++i) x[i] = _mm512_setzero_ps();
  for (int j = 0; j < NW; ++j)
    for (int r = 0; r < R; ++r) {
      __m512 v = acc[j][r];
      if (nb % 2) {  // the odd last block, as gemm_quant.cpp's 256-bit step: on the low half
        const int b = nb - 1;
        const uint8_t* wb = w + j * b_row + (size_t)b * 34;
        const __m256i qw = weights_q8_0(wb);
        const __m256i qa =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q_row(r) + b * kQuantBlock));
        const __m256i dot = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw)),
            _mm256_set1_epi16(1));
        v = _mm512_insertf32x8(
            v,
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale_of(wb) * a.d_row(r)[b]),
                            _mm512_castps512_ps256(v)),
            0);
      }
      x[r * NW + j] = v;
    }
  float sums[16];
  horizontal_sums16(x, sums);
  std::copy_n(sums, R * NW, out);
}

#if defined(CHAINLM_QUANT_AVX512_VBMI)
// Q4_0: R rows of A against NW weight rows, gemm_quant.cpp's four-blocks-per-step arithmetic
// (FourBlocks) with the weights unpacked once for all R rows. Each row's lane sums enter as the
// start of its first dot product, negated ((-8 sum(q) + lo . qlo) + hi . qhi: the same int32
// as (lo . qlo + hi . qhi) - 8 sum(q)), and its scales come widened to their block's lanes, so
// a lane's scale is one multiply, dw x da, the same product as FourBlocks::add's. The blocks
// past the last group of four go as gemm_quant.cpp's 256-bit step does, into their own
// accumulator, summed apart and added last, as there.
template <int R, int NW>
[[gnu::noinline]] void q4_tile(const uint8_t* w, size_t b_row, const QuantizedRows& a, float* out) {
  const FourBlocks k;
  const int nb = a.nb, groups = nb / 4;
  __m512 acc[NW][R];
  for (int j = 0; j < NW; ++j)
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  const size_t ahead = (groups >= 8 ? NW : 2 * NW) * b_row;  // as the Q8_0 tile's
  const int8_t* g8 = a.q4_groups;
  const uint8_t* wg = w;
  for (int g = 0; g < groups; ++g, g8 += R * kQ4GroupBytes, wg += 72) {
    __m512i lo[NW], hi[NW];
    __m512 dw[NW];
    for (int j = 0; j < NW; ++j) {
      const uint8_t* w0 = fetch_ahead(wg + j * b_row, ahead);
      __m128 d4;
      k.unpack(w0, lo[j], hi[j], d4);
      dw[j] = _mm512_permutexvar_ps(k.lane_block, _mm512_castps128_ps512(d4));
    }
    for (int r = 0; r < R; ++r) {
      const int8_t* x = g8 + r * kQ4GroupBytes;  // qlo, qhi, -sums, widened scales
      const __m512i qlo = _mm512_loadu_si512(x), qhi = _mm512_loadu_si512(x + 64);
      const __m512 da = _mm512_loadu_ps(reinterpret_cast<const float*>(x + 192));
      for (int j = 0; j < NW; ++j) {
        __m512i dot = _mm512_dpbusd_epi32(_mm512_loadu_si512(x + 128), lo[j], qlo);
        dot = _mm512_dpbusd_epi32(dot, hi[j], qhi);
        acc[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[j], da), acc[j][r]);
      }
    }
  }
  static_assert(R * NW <= 16);
  __m512 x[16];
  for (int i = R * NW; i < 16; ++i) x[i] = _mm512_setzero_ps();
  for (int j = 0; j < NW; ++j)
    for (int r = 0; r < R; ++r) x[r * NW + j] = acc[j][r];
  float sums[16];
  horizontal_sums16(x, sums);  // _mm512_reduce_add_ps's tree, as horizontal_sum's
  for (int j = 0; j < NW; ++j)
    for (int r = 0; r < R; ++r) {
      float total = sums[r * NW + j];
      if (nb % 4) {
        __m256 tail = _mm256_setzero_ps();
        for (int b = groups * 4; b < nb; ++b) {
          const uint8_t* wb = w + j * b_row + (size_t)b * 18;
          const __m256i qa =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q_row(r) + b * kQuantBlock));
          const __m256i s8 =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sum8_row(r) + b * kSumLanes));
          const __m256i dot = _mm256_sub_epi32(
              _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles_q4_0(wb), qa), _mm256_set1_epi16(1)),
              s8);
          tail = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                 _mm256_set1_ps(scale_of(wb) * a.d_row(r)[b]), tail);
        }
        total += horizontal_sum(tail);
      }
      out[r * NW + j] = total;
    }
}
#endif

// R rows of A against NW weight rows of type T. Q4_0's tiles exist with VBMI only, where
// gemm_quant_tiles alone instantiates them.
template <QuantType T, int R, int NW>
void tile_of(const uint8_t* w, size_t b_row, const QuantizedRows& a, float* out) {
  if constexpr (T == QuantType::kQ8_0) {
    tile<R, NW>(w, b_row, a, out);
  } else {
#if defined(CHAINLM_QUANT_AVX512_VBMI)
    q4_tile<R, NW>(w, b_row, a, out);
#endif
  }
}

template <QuantType T, int R>
void tiles(int n0, int n1, const QuantizedRows& a, const uint8_t* B, size_t b_row, float* C,
           int ldc, float beta) {
  auto put = [&](int n, int nw, const float* out) {
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < nw; ++j) {
        float& c = C[(long)r * ldc + n + j];
        c = beta == 0.0f ? out[r * nw + j] : out[r * nw + j] + beta * c;
      }
  };
  float out[2 * R];
  int n = n0;
  for (; n + 2 <= n1; n += 2) {
    tile_of<T, R, 2>(B + n * b_row, b_row, a, out);
    put(n, 2, out);
  }
  for (; n < n1; ++n) {
    tile_of<T, R, 1>(B + n * b_row, b_row, a, out);
    put(n, 1, out);
  }
}

template <QuantType T>
void tiles_of(int n0, int n1, int M, const QuantizedRows& a, const uint8_t* B, size_t b_row,
              float* C, int ldc, float beta) {
  using Tiles =
      void (*)(int, int, const QuantizedRows&, const uint8_t*, size_t, float*, int, float);
  static constexpr Tiles kTiles[] = {&tiles<T, 2>, &tiles<T, 3>, &tiles<T, 4>, &tiles<T, 5>,
                                     &tiles<T, 6>, &tiles<T, 7>, &tiles<T, 8>};
  static_assert(sizeof(kTiles) / sizeof(kTiles[0]) == kMaxDecodeRows - 1);
  CHAINLM_CHECK(M >= 2 && M <= kMaxDecodeRows, "gemm_quant_tiles: ", M, " rows; it takes 2..",
                kMaxDecodeRows);
  kTiles[M - 2](n0, n1, a, B, b_row, C, ldc, beta);
}

}  // namespace

void q8_pairs_layout(QuantizedRows& a, int M, uint8_t* u8_pairs, float* d_pairs) {
  const int pairs = a.nb / 2;
  for (int p = 0; p < pairs; ++p)
    for (int m = 0; m < M; ++m) {
      const __m512i q = _mm512_loadu_si512(a.q_row(m) + p * 2 * kQuantBlock);
      _mm512_storeu_si512(u8_pairs + ((size_t)p * M + m) * 64,
                          _mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80))));
      const float* d = a.d_row(m) + 2 * p;
      _mm512_storeu_ps(d_pairs + ((size_t)p * M + m) * 16,
                       _mm512_insertf32x8(_mm512_set1_ps(d[0]), _mm256_set1_ps(d[1]), 1));
    }
  a.u8_pairs = u8_pairs;
  a.d_pairs = d_pairs;
}

#if defined(CHAINLM_QUANT_AVX512_VBMI)
void q4_groups_layout(QuantizedRows& a, int M, int8_t* groups) {
  const int n = a.nb / 4;
  for (int g = 0; g < n; ++g)
    for (int m = 0; m < M; ++m) {
      int8_t* x = groups + ((size_t)g * M + m) * kQ4GroupBytes;
      std::memcpy(x, a.q4_row(m) + 128 * g, 128);
      const __m512i sums = _mm512_loadu_si512(a.sum4_row(m) + 16 * g);
      _mm512_storeu_si512(x + 128, _mm512_sub_epi32(_mm512_setzero_si512(), sums));
      const __m512 d4 = _mm512_castps128_ps512(_mm_loadu_ps(a.d_row(m) + 4 * g));
      _mm512_storeu_ps(reinterpret_cast<float*>(x + 192),
                       _mm512_permutexvar_ps(FourBlocks{}.lane_block, d4));
    }
  a.q4_groups = groups;
}
#endif

void gemm_quant_tiles(QuantType type, int n0, int n1, int M, const QuantizedRows& a,
                      const uint8_t* B, size_t b_row, float* C, int ldc, float beta) {
  if (type == QuantType::kQ8_0)
    return tiles_of<QuantType::kQ8_0>(n0, n1, M, a, B, b_row, C, ldc, beta);
#if defined(CHAINLM_QUANT_AVX512_VBMI)
  tiles_of<QuantType::kQ4_0>(n0, n1, M, a, B, b_row, C, ldc, beta);
#else
  fail("gemm_quant_tiles: Q4_0 tiles need AVX-512 VBMI (q4_groups_layout is not built without it)");
#endif
}

#endif

}  // namespace chainlm
