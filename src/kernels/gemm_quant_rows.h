#pragma once
// Internal to the quantized GEMMs (gemm_quant.cpp: few rows of A; gemm_quant_interleaved.cpp:
// many rows): the activations as quantized for them, and the weight blocks' scales.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/quant.h"
#include "kernels/simd.h"

namespace chainlm {

#if defined(__AVX2__) && defined(__FMA__)
#define CHAINLM_QUANT_AVX2 1
#endif
// AVX-512 with VNNI (and BW for byte masks): the kernels' 512-bit forms.
#if defined(CHAINLM_QUANT_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VNNI__)
#define CHAINLM_QUANT_AVX512 1
#endif
// With VBMI too (byte permutes across a whole register): the few-row Q4_0 kernel that takes
// four blocks per step (gemm_quant.cpp).
#if defined(CHAINLM_QUANT_AVX512) && defined(__AVX512VBMI__)
#define CHAINLM_QUANT_AVX512_VBMI 1
#endif

// Lanes of a block's 8 x sum(q) (below): one AVX2 register of int32.
constexpr int kSumLanes = 8;

// Activations quantized for a GEMM: per row, nb blocks of 32 int8 values, and their scales as
// floats (the fp16-rounded scales of Q8_0, widened once here rather than in the inner loop).
// Also 8 times each block's sum of q, as 8 int32 lanes (all of it in lane 0): a Q4_0 weight is
// its nibble minus 8, so its dot product with a block is (nibbles . q) - 8 sum(q); the nibbles,
// being unsigned, go straight into the u8 x s8 instructions (no sign juggling), and the
// correction is one integer subtraction per block (no scalar dependency chain).
struct QuantizedRows {
  const int8_t* q;
  const float* d;
  const int32_t* sum8;
  int nb;
  // Optional, for gemm_quant.cpp's 4-block Q4_0 kernel (AVX-512 VBMI): the same values in its
  // lane order. Per group of 4 blocks, 128 bytes: the first 16 values of blocks 0..3, then their
  // last 16; and 16 int32 sums, lane 4j holding block j's 8 x sum(q), the others 0.
  const int8_t* q4 = nullptr;
  const int32_t* sum4 = nullptr;
  // Optional, for gemm_quant_tiles.cpp (AVX-512 VNNI, kQ8TileRows or kQ4TileRows rows and more).
  // Q8_0: per pair of blocks, for each row in turn, its 64 values plus 128 as u8, and its two
  // blocks' scales widened to 8 lanes each (q8_pairs_layout). Q4_0 (with VBMI): per group of 4
  // blocks, for each row in turn, kQ4GroupBytes: its q4 values (128 bytes), its sum4 lanes negated,
  // its 4 scales widened to their blocks' lanes (q4_groups_layout).
  const uint8_t* u8_pairs = nullptr;
  const float* d_pairs = nullptr;
  const int8_t* q4_groups = nullptr;
  // Blocks from one row of q, d and sum8 to the next, when more than nb: a product that reads
  // the first nb blocks of rows quantized once for several (prepare_quantized_jobs).
  int row_blocks = 0;
  int stride() const { return row_blocks ? row_blocks : nb; }
  const int8_t* q_row(int m) const { return q + (size_t)m * stride() * kQuantBlock; }
  const float* d_row(int m) const { return d + (size_t)m * stride(); }
  const int32_t* sum8_row(int m) const { return sum8 + (size_t)m * stride() * kSumLanes; }
  const int8_t* q4_row(int m) const { return q4 + (size_t)m * (nb / 4) * 128; }
  const int32_t* sum4_row(int m) const { return sum4 + (size_t)m * (nb / 4) * 16; }
};

// A weight block's fp16 scale as a float: F16C's one instruction where the build has it (exact,
// as float_from_fp16; tests/kernels/quant_test.cpp checks the two agree on every half).
inline float scale_of(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return float_from_fp16(h);
#endif
}

#if defined(CHAINLM_QUANT_AVX2)
// The 32 signed weights of a block as int8 lanes.
inline __m256i weights_q8_0(const uint8_t* block) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
}
// The 32 nibbles of a Q4_0 block (0..15, the weights plus 8) as uint8 lanes.
inline __m256i nibbles_q4_0(const uint8_t* block) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                          _mm256_set1_epi8(0x0f));
}

#endif

#if defined(CHAINLM_QUANT_AVX512)
// From these many rows of A (a server's batched decoding step, a PHD step's copies) the
// few-row products run on gemm_quant_tiles.cpp's kernels (same bits); below, on gemm_quant.cpp's
// one-weight-row kernels. One thread, 1408 x 512 matrices streamed from memory, time of M rows
// over one row's, old kernel against tiles: Q8_0 2 rows 1.19-1.20 against 1.29-1.36 (so not
// there), 3 rows 1.63-1.68 against 1.47-1.49, 4 rows 1.90-2.06 against 1.65-1.67; Q4_0 2 rows
// 1.48-1.69 against 0.95-1.11 (bench/RESULTS.md, "Batched quantized decoding").
constexpr int kQ8TileRows = 3;
constexpr int kQ4TileRows = 2;
constexpr int kQ4GroupBytes = 256;
// a's rows 0..M-1 in gemm_quant_tiles' Q8_0 layout (QuantizedRows::u8_pairs, d_pairs), into the
// given buffers of M * (nb / 2) * 64 bytes and floats.
void q8_pairs_layout(QuantizedRows& a, int M, uint8_t* u8_pairs, float* d_pairs);
// C[m, n] = a's row m . dequant(B row n) (+ beta C) for m < M (kQ8TileRows or kQ4TileRows up to
// kMaxDecodeRows) and n in [n0, n1), weights of b_row bytes a row; a laid out by q8_pairs_layout
// (Q8_0) or q4_groups_layout (Q4_0).
void gemm_quant_tiles(QuantType type, int n0, int n1, int M, const QuantizedRows& a,
                      const uint8_t* B, size_t b_row, float* C, int ldc, float beta);
#endif

#if defined(CHAINLM_QUANT_AVX512_VBMI)
// Q4_0, four blocks per step (decoding's few rows). Four blocks are 72 contiguous bytes: one
// byte permute across two registers puts their 4 x 16 nibble bytes in one register (block j in
// 128-bit lane j), one AND and one shift-and-AND give the low and high nibbles (elements 0-15
// and 16-31 of each block), and the activations, stored in the same lane order once per GEMM
// (QuantizedRows::q4), meet them in two VNNI products into the same int32 lanes. A word permute
// of the first register picks the four fp16 scales. About 12 instructions per 128 weights
// where the two-block kernel takes ~19 per 64.
inline constexpr auto kQ4NibbleIndex = [] {
  std::array<uint8_t, 64> idx{};
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 16; ++i) idx[16 * j + i] = static_cast<uint8_t>(18 * j + 2 + i);
  return idx;
}();
inline constexpr std::array<uint16_t, 32> kQ4ScaleIndex = {0, 9, 18,
                                                           27};  // byte offsets 0, 18, 36, 54

// The kernels' constants, and their two steps: a group of four weight blocks unpacked, and one
// row of activations' products with it added to an accumulator.
struct FourBlocks {
  const __m512i nibble_index = _mm512_loadu_si512(kQ4NibbleIndex.data());
  const __m512i scale_index = _mm512_loadu_si512(kQ4ScaleIndex.data());
  const __m512i lane_block = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m512i low4 = _mm512_set1_epi8(0x0f);

  void unpack(const uint8_t* wg, __m512i& lo, __m512i& hi, __m128& dw) const {
    __builtin_prefetch(wg + 4 * 72, 0, 3);
    // Bytes 64..71 only: a masked load cannot touch the bytes after the row.
    const __m512i x0 = _mm512_loadu_si512(wg), x1 = _mm512_maskz_loadu_epi8(0xFF, wg + 64);
    const __m512i nibbles = _mm512_permutex2var_epi8(x0, nibble_index, x1);
    lo = _mm512_and_si512(nibbles, low4);
    hi = _mm512_and_si512(_mm512_srli_epi16(nibbles, 4), low4);
    dw = _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(scale_index, x0)));
  }
  // acc + (lo . qlo + hi . qhi - sums) x (dw da), each block's lanes by its own scale.
  __m512 add(__m512i lo, __m512i hi, __m128 dw, __m512i qlo, __m512i qhi, __m512i sums, __m128 da,
             __m512 acc) const {
    __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, qlo);
    dot = _mm512_sub_epi32(_mm512_dpbusd_epi32(dot, hi, qhi), sums);
    const __m512 scale =
        _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_mul_ps(dw, da)));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
  }
};
// a's rows 0..M-1 in gemm_quant_tiles' Q4_0 layout (QuantizedRows::q4_groups; a.q4 and a.sum4
// set), into a buffer of M * (nb / 4) * kQ4GroupBytes bytes.
void q4_groups_layout(QuantizedRows& a, int M, int8_t* groups);
#endif

struct GemmNtJob;  // gemm.h
// For gemm_nt_jobs: the quantized jobs' activations (at most kMaxDecodeRows rows each), quantized
// once per distinct A (the most rows and blocks its jobs read; a K that ends inside a block gets
// its own) and laid out once per job, in the calling thread's scratch, before the parallel
// region, where each thread had quantized every job's rows again (q, k and v the same rows; a
// Chain-of-Linear's blocks prefixes of them). [j]: job j's rows, nb 0 for jobs not quantized.
// Valid until the calling thread's next call.
const std::vector<QuantizedRows>& prepare_quantized_jobs(const GemmNtJob* jobs, int n);
// Columns [n0, n1) of a quantized job from its prepared rows, on the calling thread: the same
// bits as gemm_nt_quant.
void gemm_quant_prepared_columns(const GemmNtJob& job, const QuantizedRows& a, int n0, int n1);

// Whether gemm_quant_interleaved has a kernel in this build (AVX2); without one, many-row GEMMs
// dequantize the weights into the fp32 backend instead.
bool gemm_quant_interleaved_available();

// C(M, N) = A · dequant(B)^T + beta C for M rows of A quantized in `a` (many rows: prefill,
// evaluation), on the OpenMP threads. gemm_quant_interleaved.cpp says how. widest: the build's
// widest kernel (AVX-512 VNNI where it has it), else the AVX2 one (tests run both).
void gemm_quant_interleaved(QuantType type, int M, int N, const QuantizedRows& a, const uint8_t* B, size_t b_row,
                            float* C, int ldc, float beta, bool widest = true);

}  // namespace chainlm
