#pragma once
// Internal to the quantized GEMMs (gemm_quant.cpp: few rows of A; gemm_quant_interleaved.cpp:
// many rows): the activations as quantized for them, and the weight blocks' scales.
#include <cstddef>
#include <cstdint>
#include <cstring>

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
  // Optional, for gemm_quant_q8_tiles.cpp (AVX-512 VNNI, kQ8TileRows rows and more): per pair of
  // blocks, for each row in turn, its 64 values plus 128 as u8, and its two blocks' scales
  // widened to 8 lanes each (q8_pairs_layout).
  const uint8_t* u8_pairs = nullptr;
  const float* d_pairs = nullptr;
  const int8_t* q_row(int m) const { return q + (size_t)m * nb * kQuantBlock; }
  const float* d_row(int m) const { return d + (size_t)m * nb; }
  const int32_t* sum8_row(int m) const { return sum8 + (size_t)m * nb * kSumLanes; }
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
// From this many rows of A (a server's batched decoding step) Q8_0's few-row products run on
// gemm_quant_q8_tiles.cpp's kernel (same bits); below, gemm_quant.cpp's one-weight-row kernel,
// which measured as fast or faster there (4 rows: 46-50 against 51 us a matrix; bench/RESULTS.md).
constexpr int kQ8TileRows = 5;
// a's rows 0..M-1 in gemm_q8_tiles' layout (QuantizedRows::u8_pairs, d_pairs), into the given
// buffers of M * (nb / 2) * 64 bytes and floats.
void q8_pairs_layout(QuantizedRows& a, int M, uint8_t* u8_pairs, float* d_pairs);
// C[m, n] = a's row m . dequant(B row n) (+ beta C) for m < M (kQ8TileRows..kMaxDecodeRows) and
// n in [n0, n1), Q8_0 weights of b_row bytes a row; a laid out by q8_pairs_layout.
void gemm_q8_tiles(int n0, int n1, int M, const QuantizedRows& a, const uint8_t* B, size_t b_row, float* C, int ldc,
                   float beta);
#endif

// Whether gemm_quant_interleaved has a kernel in this build (AVX2); without one, many-row GEMMs
// dequantize the weights into the fp32 backend instead.
bool gemm_quant_interleaved_available();

// C(M, N) = A · dequant(B)^T + beta C for M rows of A quantized in `a` (many rows: prefill,
// evaluation), on the OpenMP threads. gemm_quant_interleaved.cpp says how. widest: the build's
// widest kernel (AVX-512 VNNI where it has it), else the AVX2 one (tests run both).
void gemm_quant_interleaved(QuantType type, int M, int N, const QuantizedRows& a, const uint8_t* B, size_t b_row,
                            float* C, int ldc, float beta, bool widest = true);

}  // namespace chainlm
