// Quantized GEMMs (gemm.h gemm_nt_quant): C = A · dequant(B)^T with B in Q8_0 or Q4_0 blocks
// (quant.h). As llama.cpp does, each row of A is first quantized to Q8_0 blocks, so every block
// product is an exact integer dot product of 32 int8 pairs, scaled by the two blocks' fp16
// scales and summed in fp32: C[m,n] = sum_b d_w(n,b) d_a(m,b) sum_i q_w q_a. Decoding reads
// every weight once per token, so its speed is the bytes it reads: 1.06 (Q8_0) or 0.56 (Q4_0)
// bytes per weight against 4 in fp32. The integer dot products use AVX-512 VNNI where the
// build has it, AVX2's maddubs otherwise (with the sign trick: |w| times sign(w)*a), and plain
// C++ elsewhere. Threads split the output columns (weight rows); each walks its rows in tiles
// small enough to stay in L1 while every row of A passes over them. A server's batch of a few
// rows (kQ8TileRows / kQ4TileRows and more, AVX-512 VNNI) goes to gemm_quant_tiles.cpp's kernels,
// which give each row the same bits; from kInterleavedRows rows of A on (prefill),
// gemm_quant_interleaved.cpp's kernel takes over.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/thread_scratch.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/gemm_quant_rows.h"
#include "kernels/job_inputs.h"
#include "kernels/quant.h"

namespace chainlm {

namespace {

constexpr int kRowsPerPass = 4;  // rows of A dotted with each unpacked weight block
constexpr int kTileRows = 16;    // weight rows kept hot while all rows of A pass
// From this many rows of A on, the interleaved kernel (gemm_quant_interleaved.cpp) runs: its
// repacking of the weights pays for itself once several rows share it. Its sums come out in
// another order, so decoding batches (up to kMaxDecodeRows rows, gemm.h) stay below it.
constexpr int kInterleavedRows = kMaxDecodeRows + 1;
// Without it (no AVX2), from this many rows on the weights are dequantized into the fp32 GEMM
// backend instead, whose register-blocked kernels beat the portable dot products there.
constexpr int kDequantizeRows = 16;
// The dequantized weight panels: about 8 MB of floats per GEMM call.
constexpr long kPanelFloats = 2L << 20;

// The kernels of dot_rows: the portable C++ one, AVX2's (256-bit: one block per register, VNNI's
// 256-bit form where the build has it) and AVX-512's (two blocks per register). The widest the
// build has runs; the tests run the others too (gemm_nt_quant_portable, gemm_nt_quant_avx2).
enum class Path { kPortable, kAvx2, kWidest };

#if defined(CHAINLM_QUANT_AVX2)

// Eight int32 partial sums of u . a for unsigned u (<= 15: no saturation).
inline __m256i dot_u8_i8(__m256i u, __m256i a) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
#endif
}

// Eight int32 partial sums of w . a over the block (|w| <= 127: no saturation in maddubs).
inline __m256i dot_i8(__m256i w, __m256i a) {
  const __m256i abs_w = _mm256_sign_epi8(w, w);
  const __m256i signed_a = _mm256_sign_epi8(a, w);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, signed_a);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, signed_a), _mm256_set1_epi16(1));
#endif
}

#endif

#if defined(CHAINLM_QUANT_AVX512)
// dot_rows' block pairs (b, b+1) on 512-bit registers, for b + 2 <= nb: lanes 0-7 hold block
// b's eight partial sums and lanes 8-15 block b+1's, the very lanes of the 256-bit path's acc0
// (even blocks) and acc1 (odd blocks), with the same operations on each, so both paths give the
// same bits. Per pair: one load-and-widen of the two weight scales, one VNNI dot product, one
// conversion and one FMA per row, where the 256-bit path spends two of each and two scalar
// scale products. Returns the first block not done (the caller finishes any odd one).
template <QuantType T, int R>
int two_blocks_at_a_time(const uint8_t* w, int nb, const int8_t* const* aq, const float* const* ad,
                         const int32_t* const* s8, __m256* acc0, __m256* acc1) {
  constexpr size_t wb = T == QuantType::kQ8_0 ? 34 : 18;
  // Scale lanes: s0 (block b) in lanes 0-7, s1 (block b+1) in 8-15.
  const __m512i pair_lanes = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  // Q4_0: the low nibbles of a block's 16 bytes are its weights 0-15, the high ones 16-31.
  const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                                 0x0004000400040004LL, 0x0004000400040004LL);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int b = 0;
  for (; b + 2 <= nb; b += 2) {
    __builtin_prefetch(w + (b + 8) * wb, 0, 3);
    const uint8_t* w0 = w + b * wb;
    const uint8_t* w1 = w0 + wb;
    uint16_t h0, h1;
    std::memcpy(&h0, w0, 2);
    std::memcpy(&h1, w1, 2);
    const __m128 dw = _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(h0), h1, 1));  // dw0, dw1
    __m512i wq;
    if constexpr (T == QuantType::kQ8_0) {
      wq = _mm512_inserti64x4(_mm512_castsi256_si512(weights_q8_0(w0)), weights_q8_0(w1), 1);
    } else {
      const __m512i packed = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w0 + 2)))),
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w1 + 2))), 1);
      wq = _mm512_and_si512(_mm512_srlv_epi16(packed, nibble_shift), _mm512_set1_epi8(0x0f));
    }
    const __mmask64 negative = T == QuantType::kQ8_0 ? _mm512_movepi8_mask(wq) : 0;
    const __m512i abs_w = T == QuantType::kQ8_0 ? _mm512_abs_epi8(wq) : wq;
    for (int r = 0; r < R; ++r) {
      __m512i qa = _mm512_loadu_si512(aq[r] + b * kQuantBlock);
      __m512i dot;
      if constexpr (T == QuantType::kQ8_0) {
        // |w| . (sign(w) a), as _mm256_sign_epi8 (a zero weight's product is zero either way).
        qa = _mm512_mask_sub_epi8(qa, negative, _mm512_setzero_si512(), qa);
        dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), abs_w, qa);
      } else {
        dot = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), abs_w, qa),
                               _mm512_loadu_si512(s8[r] + b * kSumLanes));
      }
      double da;  // ad[r][b], ad[r][b + 1] as one 64-bit load
      std::memcpy(&da, ad[r] + b, sizeof da);
      const __m128 s = _mm_mul_ps(dw, _mm_castpd_ps(_mm_set_sd(da)));
      const __m512 scale = _mm512_permutexvar_ps(pair_lanes, _mm512_castps128_ps512(s));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm512_castps512_ps256(acc[r]);
    acc1[r] = _mm512_extractf32x8_ps(acc[r], 1);
  }
  return b;
}
#endif

#if defined(CHAINLM_QUANT_AVX512_VBMI)
template <int R>
void four_blocks_at_a_time(const uint8_t* w, int groups, const QuantizedRows& a, int m, __m512* acc) {
  const FourBlocks k;
  for (int g = 0; g < groups; ++g) {
    __m512i lo, hi;
    __m128 dw;
    k.unpack(w + 72 * g, lo, hi, dw);
    for (int r = 0; r < R; ++r) {
      const int8_t* qa = a.q4_row(m + r) + 128 * g;
      acc[r] = k.add(lo, hi, dw, _mm512_loadu_si512(qa), _mm512_loadu_si512(qa + 64),
                     _mm512_loadu_si512(a.sum4_row(m + r) + 16 * g), _mm_loadu_ps(a.d_row(m + r) + 4 * g), acc[r]);
    }
  }
}

// One row of activations (decoding) against four weight rows w + j b_row, nb a multiple of 4:
// four_blocks_at_a_time's operations for each, with the activation loaded once for the four,
// and the four sums reduced together: _mm512_reduce_add_ps's order ((lanes 0-7 + 8-15), then
// the two halves of that, then (x0 + x2) + (x1 + x3)) through one 4 x 4 transpose. The same
// bits as dot_rows<kQ4_0, 1, kWidest> row by row; several times less reduction work per row.
void four_weight_rows(const uint8_t* w, size_t b_row, int groups, const QuantizedRows& a, float* out) {
  const FourBlocks k;
  const int8_t* q4 = a.q4_row(0);
  const int32_t* sum4 = a.sum4_row(0);
  const float* ad = a.d_row(0);
  __m512 acc[4];
  for (int j = 0; j < 4; ++j) acc[j] = _mm512_setzero_ps();
  for (int g = 0; g < groups; ++g) {
    const __m512i qlo = _mm512_loadu_si512(q4 + 128 * g), qhi = _mm512_loadu_si512(q4 + 128 * g + 64);
    const __m512i sums = _mm512_loadu_si512(sum4 + 16 * g);
    const __m128 da = _mm_loadu_ps(ad + 4 * g);
    for (int j = 0; j < 4; ++j) {
      __m512i lo, hi;
      __m128 dw;
      k.unpack(w + j * b_row + 72 * g, lo, hi, dw);
      acc[j] = k.add(lo, hi, dw, qlo, qhi, sums, da, acc[j]);
    }
  }
  __m128 t[4];
  for (int j = 0; j < 4; ++j) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc[j]), _mm512_extractf32x8_ps(acc[j], 1));
    t[j] = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  }
  _MM_TRANSPOSE4_PS(t[0], t[1], t[2], t[3]);  // t[c] lane j: row j's x_c
  _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(t[0], t[2]), _mm_add_ps(t[1], t[3])));
}

// The activations in four_blocks_at_a_time's lane order (QuantizedRows::q4, sum4).
void q4_lane_order(const QuantizedRows& a, int M, int8_t* q4, int32_t* sum4) {
  const int groups = a.nb / 4;
  for (int m = 0; m < M; ++m) {
    const int8_t* q = a.q_row(m);
    const int32_t* sum8 = a.sum8_row(m);
    int8_t* out = q4 + (size_t)m * groups * 128;
    int32_t* sums = sum4 + (size_t)m * groups * 16;
    for (int g = 0; g < groups; ++g)
      for (int j = 0; j < 4; ++j) {
        const int b = 4 * g + j;
        std::memcpy(out + 128 * g + 16 * j, q + b * kQuantBlock, 16);
        std::memcpy(out + 128 * g + 64 + 16 * j, q + b * kQuantBlock + 16, 16);
        for (int l = 0; l < 4; ++l) sums[16 * g + 4 * j + l] = l == 0 ? sum8[b * kSumLanes] : 0;
      }
  }
}
#endif

#if defined(CHAINLM_QUANT_AVX2)
// One Q4_0 block's product added to acc: the nibbles against a row's int8 block, less 8 times
// its sum (sum8), scaled by the two blocks' scales. Every AVX2 Q4_0 kernel of one or a few rows
// adds its blocks through this, so a row gets the same bits whichever of them ran.
inline __m256 add_q4_0_block(__m256i nibbles, __m256i qa, __m256i sum8, float scale, __m256 acc) {
  const __m256i dot = _mm256_sub_epi32(dot_u8_i8(nibbles, qa), sum8);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale), acc);
}
#endif

// C[m+r, n] for r < R: weight row w (nb blocks) against activation rows m..m+R-1. Vector: the
// build's SIMD path (when it has one), otherwise the portable one, which the tests also run on
// every machine.
template <QuantType T, int R, Path P>
void dot_rows(const uint8_t* w, const QuantizedRows& a, int m, float* out) {
  constexpr size_t wb = T == QuantType::kQ8_0 ? 34 : 18;
  const int nb = a.nb;
  const int8_t* aq[R];
  const float* ad[R];
  for (int r = 0; r < R; ++r) {
    aq[r] = a.q_row(m + r);
    ad[r] = a.d_row(m + r);
  }
#if defined(CHAINLM_QUANT_AVX2)
  if constexpr (P != Path::kPortable) {
    // Two accumulators per row (even and odd blocks) keep two FMA chains in flight.
    __m256 acc0[R], acc1[R];
    const int32_t* s8[R];
    for (int r = 0; r < R; ++r) {
      acc0[r] = acc1[r] = _mm256_setzero_ps();
      s8[r] = a.sum8_row(m + r);
    }
    auto block = [&](int b, __m256* acc) {
      const uint8_t* wblock = w + b * wb;
      const float dw = scale_of(wblock);
      if constexpr (T == QuantType::kQ8_0) {
        const __m256i qw = weights_q8_0(wblock);
        for (int r = 0; r < R; ++r) {
          const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq[r] + b * kQuantBlock));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_i8(qw, qa)), _mm256_set1_ps(dw * ad[r][b]), acc[r]);
        }
      } else {
        const __m256i nib = nibbles_q4_0(wblock);
        for (int r = 0; r < R; ++r) {
          const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq[r] + b * kQuantBlock));
          const __m256i sum8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s8[r] + b * kSumLanes));
          acc[r] = add_q4_0_block(nib, qa, sum8, dw * ad[r][b], acc[r]);
        }
      }
    };
    int b = 0;
#if defined(CHAINLM_QUANT_AVX512_VBMI)
    if constexpr (P == Path::kWidest && T == QuantType::kQ4_0) {
      if (a.q4) {  // whole groups of 4 blocks, then any last blocks one at a time
        __m512 acc[R];
        for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
        four_blocks_at_a_time<R>(w, nb / 4, a, m, acc);
        for (b = nb / 4 * 4; b < nb; ++b) block(b, acc0);
        // (No tail, nothing added: four_weight_rows gives the same bits, -0 included.)
        for (int r = 0; r < R; ++r)
          out[r] = nb % 4 ? _mm512_reduce_add_ps(acc[r]) + horizontal_sum(acc0[r]) : _mm512_reduce_add_ps(acc[r]);
        return;
      }
    }
#endif
#if defined(CHAINLM_QUANT_AVX512)
    if constexpr (P == Path::kWidest) b = two_blocks_at_a_time<T, R>(w, nb, aq, ad, s8, acc0, acc1);
#endif
    for (; b + 2 <= nb; b += 2) {
      __builtin_prefetch(w + (b + 8) * wb, 0, 3);
      block(b, acc0);
      block(b + 1, acc1);
    }
    if (b < nb) block(b, acc0);
    for (int r = 0; r < R; ++r) out[r] = horizontal_sum(_mm256_add_ps(acc0[r], acc1[r]));
    return;
  }
#endif
  for (int r = 0; r < R; ++r) out[r] = 0.0f;
  for (int b = 0; b < nb; ++b) {
    const uint8_t* wblock = w + b * wb;
    int qw[kQuantBlock];
    for (int i = 0; i < kQuantBlock; ++i)
      qw[i] = T == QuantType::kQ8_0 ? reinterpret_cast<const int8_t*>(wblock + 2)[i]
              : i < 16             ? (wblock[2 + i] & 0x0f) - 8
                                   : (wblock[2 + i - 16] >> 4) - 8;
    const float dw = scale_of(wblock);
    for (int r = 0; r < R; ++r) {
      const int8_t* qa = aq[r] + b * kQuantBlock;
      int sum = 0;
      for (int i = 0; i < kQuantBlock; ++i) sum += qw[i] * qa[i];
      out[r] += dw * ad[r][b] * static_cast<float>(sum);
    }
  }
}

#if defined(CHAINLM_QUANT_AVX2)
// One row of activations (decoding one sequence) against four Q4_0 weight rows at a time: each
// activation block, its sum and its scale loaded once for the four, where dot_rows<kQ4_0, 1>
// loaded them again for every weight row (the unpacking of the nibbles leaves that kernel short
// of the memory's pace). Each (row, weight row) sum is dot_rows' own: even blocks into acc0, odd
// ones into acc1, the same operations in the same order, so the same bits. (Q8_0 measured no
// faster so: its one-row kernel keeps up with the memory.)
void q4_0_weight_rows_avx2(const uint8_t* w, size_t b_row, const QuantizedRows& a, float* out) {
  constexpr int S = 4;
  constexpr size_t wb = 18;
  const int nb = a.nb;
  const int8_t* aq = a.q_row(0);
  const float* ad = a.d_row(0);
  const int32_t* s8 = a.sum8_row(0);
  __m256 acc0[S], acc1[S];
  for (int s = 0; s < S; ++s) acc0[s] = acc1[s] = _mm256_setzero_ps();
  auto block = [&](int b, __m256* acc) {
    const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + b * kQuantBlock));
    const __m256i sum8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s8 + b * kSumLanes));
    const float da = ad[b];
    for (int s = 0; s < S; ++s) {
      const uint8_t* wblock = w + s * b_row + b * wb;
      acc[s] = add_q4_0_block(nibbles_q4_0(wblock), qa, sum8, scale_of(wblock) * da, acc[s]);
    }
  };
  int b = 0;
  for (; b + 2 <= nb; b += 2) {
    for (int s = 0; s < S; ++s) __builtin_prefetch(w + s * b_row + (b + 8) * wb, 0, 3);
    block(b, acc0);
    block(b + 1, acc1);
  }
  if (b < nb) block(b, acc0);
  for (int s = 0; s < S; ++s) out[s] = horizontal_sum(_mm256_add_ps(acc0[s], acc1[s]));
}
#endif

template <QuantType T, Path P>
void gemm_columns(int n0, int n1, int M, const QuantizedRows& a, const uint8_t* B, size_t b_row,
                  float* C, int ldc, float beta) {
#if defined(CHAINLM_QUANT_AVX512_VBMI)
  if constexpr (P == Path::kWidest && T == QuantType::kQ4_0) {
    if (M == 1 && a.q4 && a.nb % 4 == 0) {  // decoding one sequence: four weight rows at a time
      int n = n0;
      for (; n + 4 <= n1; n += 4) {
        float out[4];
        four_weight_rows(B + n * b_row, b_row, a.nb / 4, a, out);
        for (int j = 0; j < 4; ++j) C[n + j] = beta == 0.0f ? out[j] : out[j] + beta * C[n + j];
      }
      n0 = n;
    }
  }
#endif
#if defined(CHAINLM_QUANT_AVX512)
  if constexpr (P == Path::kWidest) {
    if (a.u8_pairs || a.q4_groups)
      return gemm_quant_tiles(T, n0, n1, M, a, B, b_row, C, ldc, beta);  // a batched step
  }
#endif
#if defined(CHAINLM_QUANT_AVX2)
  // One row of Q4_0 on the AVX2 kernels (those of builds without AVX-512's, and the lower-ISA
  // path of those with them): four weight rows at a time, the rest one by one.
#if defined(CHAINLM_QUANT_AVX512)
  constexpr bool kAvx2Kernels = P == Path::kAvx2;
#else
  constexpr bool kAvx2Kernels = P != Path::kPortable;
#endif
  if constexpr (kAvx2Kernels && T == QuantType::kQ4_0) {
    if (M == 1) {
      int n = n0;
      for (; n + 4 <= n1; n += 4) {
        float out[4];
        q4_0_weight_rows_avx2(B + n * b_row, b_row, a, out);
        for (int j = 0; j < 4; ++j) C[n + j] = beta == 0.0f ? out[j] : out[j] + beta * C[n + j];
      }
      n0 = n;
    }
  }
#endif
  for (int t0 = n0; t0 < n1; t0 += kTileRows) {
    const int t1 = std::min(n1, t0 + kTileRows);
    for (int m = 0; m < M; m += kRowsPerPass) {
      const int rows = std::min(kRowsPerPass, M - m);
      for (int n = t0; n < t1; ++n) {
        const uint8_t* w = B + n * b_row;
        float out[kRowsPerPass];
        switch (rows) {
          case 4: dot_rows<T, 4, P>(w, a, m, out); break;
          case 3: dot_rows<T, 3, P>(w, a, m, out); break;
          case 2: dot_rows<T, 2, P>(w, a, m, out); break;
          default: dot_rows<T, 1, P>(w, a, m, out); break;
        }
        for (int r = 0; r < rows; ++r) {
          float& c = C[(long)(m + r) * ldc + n];
          c = beta == 0.0f ? out[r] : out[r] + beta * c;
        }
      }
    }
  }
}

// gemm_columns for the weights' type.
template <Path P>
void columns_of(QuantType type, int n0, int n1, int M, const QuantizedRows& a, const uint8_t* B,
                size_t b_row, float* C, int ldc, float beta) {
  if (type == QuantType::kQ8_0)
    gemm_columns<QuantType::kQ8_0, P>(n0, n1, M, a, B, b_row, C, ldc, beta);
  else
    gemm_columns<QuantType::kQ4_0, P>(n0, n1, M, a, B, b_row, C, ldc, beta);
}

// One row of activations as Q8_0 (quant.h's rule: d = max|x| / 127 rounded to fp16, q =
// round(x / d) half away from zero), zero-padded to whole blocks.
void quantize_activations(const float* x, int K, int nb, int8_t* q, float* d, int32_t* sum8) {
  for (int b = 0; b < nb; ++b) {
    const int begin = b * kQuantBlock, n = std::min(kQuantBlock, K - begin);
    int8_t* qb = q + (size_t)b * kQuantBlock;
    int32_t* lanes = sum8 + (size_t)b * kSumLanes;
    std::fill(lanes + 1, lanes + kSumLanes, 0);
#if defined(CHAINLM_QUANT_AVX2)
    if (n == kQuantBlock) {
      // The same operations as the loop below, eight lanes at a time (prefill quantizes every
      // row of A; the scalar loop was a quarter of a 4-bit GEMM's time).
      const __m256 sign_bit = _mm256_set1_ps(-0.0f);
      __m256 v[4], m = _mm256_setzero_ps();
      for (int j = 0; j < 4; ++j) {
        v[j] = _mm256_loadu_ps(x + begin + 8 * j);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v[j]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float scale = _mm_cvtss_f32(m4) / 127.0f, inv = scale != 0.0f ? 1.0f / scale : 0.0f;
      d[b] = float_from_fp16(fp16_from_float(scale));
      __m256i qi[4], total = _mm256_setzero_si256();
      for (int j = 0; j < 4; ++j) {
        // Half away from zero, exactly: the truncation, plus the sign where |fraction| >= 1/2.
        const __m256 y = _mm256_mul_ps(v[j], _mm256_set1_ps(inv));
        const __m256 t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 away = _mm256_cmp_ps(_mm256_andnot_ps(sign_bit, _mm256_sub_ps(y, t)), _mm256_set1_ps(0.5f),
                                          _CMP_GE_OQ);
        const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(sign_bit, y));
        qi[j] = _mm256_cvtps_epi32(_mm256_add_ps(t, _mm256_and_ps(away, one)));
        total = _mm256_add_epi32(total, qi[j]);
      }
      // int32 -> int8 (values within +-127): packs work within 128-bit halves, then a permute
      // restores the order.
      const __m256i w16a = _mm256_packs_epi32(qi[0], qi[1]), w16b = _mm256_packs_epi32(qi[2], qi[3]);
      const __m256i b8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w16a, w16b),
                                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb), b8);
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
      lanes[0] = 8 * _mm_cvtsi128_si32(s4);
      continue;
    }
#endif
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[begin + i]));
    const float scale = amax / 127.0f, inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    d[b] = float_from_fp16(fp16_from_float(scale));
    int sum = 0;
    for (int i = 0; i < n; ++i) {
      qb[i] = static_cast<int8_t>(std::round(x[begin + i] * inv));
      sum += qb[i];
    }
    for (int i = n; i < kQuantBlock; ++i) qb[i] = 0;
    lanes[0] = 8 * sum;
  }
}

// The layouts gemm_columns' kernels take besides the rows themselves (QuantizedRows::q4, sum4,
// q4_groups, u8_pairs, d_pairs) for M rows of a, from `at` in buf, or only their size (buf
// null). Returns the bytes taken.
size_t lay_out([[maybe_unused]] QuantType type, [[maybe_unused]] int M, QuantizedRows& a,
               uint8_t* buf) {
  size_t at = 0;
  [[maybe_unused]] auto take = [&](size_t bytes) {
    uint8_t* p = buf ? buf + at : nullptr;
    at += (bytes + 63) / 64 * 64;
    return p;
  };
  [[maybe_unused]] const int nb = a.nb;
#if defined(CHAINLM_QUANT_AVX512_VBMI)
  if (type == QuantType::kQ4_0 && M < kInterleavedRows && nb >= 4) {
    auto* q4 = reinterpret_cast<int8_t*>(take((size_t)M * (nb / 4) * 128));
    auto* sum4 = reinterpret_cast<int32_t*>(take((size_t)M * (nb / 4) * 16 * sizeof(int32_t)));
    auto* groups = M >= kQ4TileRows
                       ? reinterpret_cast<int8_t*>(take((size_t)M * (nb / 4) * kQ4GroupBytes))
                       : nullptr;
    if (buf) {
      q4_lane_order(a, M, q4, sum4);
      a.q4 = q4;
      a.sum4 = sum4;
      if (groups) q4_groups_layout(a, M, groups);
    }
  }
#endif
#if defined(CHAINLM_QUANT_AVX512)
  if (type == QuantType::kQ8_0 && M >= kQ8TileRows && M < kInterleavedRows && nb >= 2) {
    uint8_t* u8 = take((size_t)M * (nb / 2) * 64);
    auto* d16 = reinterpret_cast<float*>(take((size_t)M * (nb / 2) * 16 * sizeof(float)));
    if (buf) q8_pairs_layout(a, M, u8, d16);
  }
#endif
  return at;
}

struct QuantActivations;
struct DequantizedPanel;

template <Path P>
void gemm_nt_quant_impl(int M, int N, int K, const float* A, int lda, QuantType type,
                        const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  if (M == 0 || N == 0) return;
  const int nb = (int)quant_blocks(K);
  const size_t b_row = quant_row_bytes(type, ldb);
  // The quantized activations, their scales and block sums: taken here, outside the region.
  int8_t* q = thread_scratch<int8_t, QuantActivations>(0, (size_t)M * nb * kQuantBlock);
  float* d = thread_scratch<float, QuantActivations>(0, (size_t)M * nb);
  int32_t* sums = thread_scratch<int32_t, QuantActivations>(0, (size_t)M * nb * kSumLanes);
  QuantizedRows a{q, d, sums, nb};
  parallel_for(M, (long)M * K, [&](long m) {
    quantize_activations(A + m * lda, K, nb, q + (size_t)m * nb * kQuantBlock, d + (size_t)m * nb,
                         sums + (size_t)m * nb * kSumLanes);
  });
  if (P == Path::kWidest) {  // the layouts of the build's widest kernels
    struct Layouts;
    lay_out(type, M, a, thread_scratch<uint8_t, Layouts>(0, lay_out(type, M, a, nullptr)));
  }
  if (P != Path::kPortable && M >= kInterleavedRows && gemm_quant_interleaved_available()) {
    gemm_quant_interleaved(type, M, N, a, B, b_row, C, ldc, beta, P == Path::kWidest);
    return;
  }
  // Threads only from kThreadedWeightBytes (gemm.h) of weight bytes x rows: a parallel region costs
  // 3-4 us on the 2-core VMs measured, about what one thread takes for 100-150 KB of quantized
  // weights, so a q4_0 512 x 512 GEMV (147 KB, ~5 us) ran slower split in two.
  for_column_ranges(
      N, (long)M * N * (long)b_row,
      [&](int n0, int n1) { columns_of<P>(type, n0, n1, M, a, B, b_row, C, ldc, beta); },
      kThreadedWeightBytes);
}

}  // namespace

const std::vector<QuantizedRows>& prepare_quantized_jobs(const GemmNtJob* jobs, int n) {
  thread_local std::vector<QuantizedRows> out;
  thread_local std::vector<JobInput> sources;
  thread_local std::vector<int> source_of;
  out.assign(n, QuantizedRows{nullptr, nullptr, nullptr, 0});
  // Whole blocks are quantized alone, so a prefix of whole blocks is shared; a K that ends
  // inside a block quantizes that block from fewer values, so it keys its own input.
  group_job_inputs(
      jobs, n,
      [](const GemmNtJob& g) { return g.B.quant && g.M > 0 && g.K > 0 && g.M <= kMaxDecodeRows; },
      [](const GemmNtJob& g) { return g.K % kQuantBlock == 0 ? 0 : g.K; }, sources, source_of);
  if (sources.empty()) return out;
  size_t blocks = 0;  // JobInput::at: in blocks
  for (JobInput& s : sources) {
    s.at = blocks;
    blocks += (size_t)s.rows * quant_blocks(s.cols);
  }
  struct JobsQ;
  int8_t* q = thread_scratch<int8_t, JobsQ>(0, blocks * kQuantBlock);
  float* d = thread_scratch<float, JobsQ>(0, blocks);
  int32_t* sums = thread_scratch<int32_t, JobsQ>(0, blocks * kSumLanes);
  for (const JobInput& s : sources) {
    const int nb = (int)quant_blocks(s.cols);
    for (int m = 0; m < s.rows; ++m) {
      const size_t at = s.at + (size_t)m * nb;
      quantize_activations(s.A + (size_t)m * s.lda, s.cols, nb, q + at * kQuantBlock, d + at,
                           sums + at * kSumLanes);
    }
  }
  size_t layout_bytes = 0;
  for (int j = 0; j < n; ++j) {
    if (source_of[j] < 0) continue;
    const JobInput& s = sources[source_of[j]];
    QuantizedRows& a = out[j];
    a = QuantizedRows{q + s.at * kQuantBlock, d + s.at, sums + s.at * kSumLanes,
                      (int)quant_blocks(jobs[j].K)};
    a.row_blocks = (int)quant_blocks(s.cols);
    layout_bytes += lay_out(jobs[j].B.quant_type, jobs[j].M, a, nullptr);
  }
  struct JobsLayouts;
  uint8_t* buf = thread_scratch<uint8_t, JobsLayouts>(0, layout_bytes);
  for (int j = 0; j < n; ++j)
    if (source_of[j] >= 0) buf += lay_out(jobs[j].B.quant_type, jobs[j].M, out[j], buf);
  return out;
}

void gemm_quant_prepared_columns(const GemmNtJob& job, const QuantizedRows& a, int n0, int n1) {
  columns_of<Path::kWidest>(job.B.quant_type, n0, n1, job.M, a, job.B.quant,
                            quant_row_bytes(job.B.quant_type, job.ldb), job.C, job.ldc, job.beta);
}

bool gemm_quant_dequantizes(int M) { return !gemm_quant_interleaved_available() && M >= kDequantizeRows; }

void gemm_nt_quant(int M, int N, int K, const float* A, int lda, QuantType type, const uint8_t* B,
                   int ldb, float* C, int ldc, float beta) {
  if (gemm_quant_dequantizes(M)) return gemm_nt_quant_via_fp32(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
  gemm_nt_quant_impl<Path::kWidest>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
}

void gemm_nt_quant_via_fp32(int M, int N, int K, const float* A, int lda, QuantType type, const uint8_t* B,
                            int ldb, float* C, int ldc, float beta) {
  // Panels of weight rows dequantized to fp32 go through the fp32 GEMM backend, whose
  // register-blocked kernels then do the work; a panel is dequantized once for all M rows.
  // (llama.cpp's BLAS path does the same for large batches.)
  if (N == 0) return;
  const size_t b_row = quant_row_bytes(type, ldb);
  const int panel_rows = (int)std::max<long>(64, kPanelFloats / std::max(K, 1));
  for (int n0 = 0; n0 < N; n0 += panel_rows) {
    const int rows = std::min(panel_rows, N - n0);
    float* p = thread_scratch<float, DequantizedPanel>(0, (size_t)rows * K);  // outside the region
    parallel_for(rows, (long)rows * K,
                 [&](long r) { dequantize_row(type, B + (size_t)(n0 + r) * b_row, K, p + (size_t)r * K); });
    gemm_nt(M, rows, K, A, lda, p, K, C + n0, ldc, beta);
  }
}

void gemm_nt_quant_portable(int M, int N, int K, const float* A, int lda, QuantType type,
                            const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  gemm_nt_quant_impl<Path::kPortable>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
}

void gemm_nt_quant_avx2(int M, int N, int K, const float* A, int lda, QuantType type,
                        const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  gemm_nt_quant_impl<Path::kAvx2>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
}

}  // namespace chainlm
