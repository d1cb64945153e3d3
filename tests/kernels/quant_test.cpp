// Block quantization (Q8_0, Q4_0) and the quantized GEMM. fp16 scales are checked against the
// CPU's own F16C conversion where the build has it (an independent implementation), every
// block's rounding against its bound, and the GEMM twice: against a float64 product of the same
// quantized operands (the kernel may only differ by fp32 rounding of the block sums), and
// against the fp32 product it approximates, within the bound the two quantizations imply.
#include "kernels/quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "kernels/gemm.h"
#include "kernels/simd.h"

namespace chainlm {
namespace {

using test::random_vector;

TEST(Fp16, KnownValuesAndRounding) {
  EXPECT_EQ(fp16_from_float(1.0f), 0x3c00);
  EXPECT_EQ(fp16_from_float(-2.0f), 0xc000);
  EXPECT_EQ(fp16_from_float(65504.0f), 0x7bff);
  EXPECT_EQ(fp16_from_float(65520.0f), 0x7c00);  // halfway to 2^16: rounds to infinity
  EXPECT_EQ(fp16_from_float(65519.0f), 0x7bff);
  EXPECT_EQ(fp16_from_float(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(fp16_from_float(std::ldexp(1.0f, -25)), 0x0000);  // halfway to it: ties to even (0)
  EXPECT_EQ(fp16_from_float(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie, to even
  EXPECT_EQ(fp16_from_float(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, to even
  EXPECT_EQ(fp16_from_float(-0.0f), 0x8000);
  EXPECT_TRUE(
      std::isnan(float_from_fp16(fp16_from_float(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float x = float_from_fp16(static_cast<uint16_t>(h));
    if (!std::isnan(x)) {
      ASSERT_EQ(fp16_from_float(x), h) << std::hex << h;  // every half survives the round trip
    }
  }
}

#if defined(__F16C__)
TEST(Fp16, AgreesWithTheCpusF16c) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float mine = float_from_fp16(static_cast<uint16_t>(h)),
                cpu = _cvtsh_ss(static_cast<unsigned short>(h));
    if (std::isnan(cpu)) {
      ASSERT_TRUE(std::isnan(mine));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(mine), std::bit_cast<uint32_t>(cpu)) << std::hex << h;
    }
  }
  const auto v = random_vector(200000, 3, 1.0f);
  for (size_t i = 0; i < v.size(); ++i) {
    // Across the whole range: tiny (subnormal halves), ordinary, and overflowing values.
    const float x = v[i] * std::ldexp(1.0f, static_cast<int>(i % 48) - 30);
    ASSERT_EQ(fp16_from_float(x), _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)) << x;
  }
}
#endif

TEST(Quantize, Q8_0KnownBlockAndBound) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 16) / 16.0f;  // -1 .. 0.9375
  std::vector<uint8_t> q(quant_row_bytes(QuantType::kQ8_0, 32));
  ASSERT_EQ(q.size(), 34u);
  quantize_row(QuantType::kQ8_0, x.data(), 32, q.data());
  // d = 1/127; -1 -> -127, 0.5 -> 63.5 -> 64 (half away from zero).
  EXPECT_EQ(reinterpret_cast<int8_t*>(q.data() + 2)[0], -127);
  EXPECT_EQ(reinterpret_cast<int8_t*>(q.data() + 2)[24], 64);
  EXPECT_EQ(reinterpret_cast<int8_t*>(q.data() + 2)[16], 0);

  // Random rows: every weight within half a step of d (plus the fp16 rounding of d, 2^-11 of it,
  // times |q| <= 127), and a row length that is not a multiple of 32 reads back the same.
  for (long K : {32L, 64L, 100L, 7L}) {
    const auto v = random_vector(K, 11 + K, 3.0f);
    std::vector<uint8_t> row(quant_row_bytes(QuantType::kQ8_0, K));
    std::vector<float> back(K);
    quantize_row(QuantType::kQ8_0, v.data(), K, row.data());
    dequantize_row(QuantType::kQ8_0, row.data(), K, back.data());
    for (long b = 0; b * 32 < K; ++b) {
      float amax = 0;
      for (long i = b * 32; i < std::min(K, b * 32 + 32); ++i)
        amax = std::max(amax, std::fabs(v[i]));
      const double d = amax / 127.0, bound = d / 2 + d * std::ldexp(1.0, -11) * 127 + 1e-7;
      for (long i = b * 32; i < std::min(K, b * 32 + 32); ++i)
        ASSERT_LE(std::fabs(back[i] - v[i]), bound) << K << " " << i;
    }
  }
}

// llama.cpp's decoding of a Q4_0 block, on bytes written by hand: scale, then byte j holding
// element j in its low nibble and element j+16 in its high one, each stored plus 8.
TEST(Quantize, Q4_0LayoutDecodesAsLlamaCpp) {
  std::vector<uint8_t> block(18, 0x88);  // every element 0
  const uint16_t d = fp16_from_float(0.5f);
  block[0] = d & 0xff;
  block[1] = d >> 8;
  block[2] = 0x30;   // element 0: 0 - 8 = -8; element 16: 3 - 8 = -5
  block[3] = 0x8f;   // element 1: 15 - 8 = 7
  block[17] = 0xa8;  // element 31: 10 - 8 = 2
  std::vector<float> back(32);
  dequantize_row(QuantType::kQ4_0, block.data(), 32, back.data());
  EXPECT_EQ(back[0], -4.0f);
  EXPECT_EQ(back[16], -2.5f);
  EXPECT_EQ(back[1], 3.5f);
  EXPECT_EQ(back[31], 1.0f);
  EXPECT_EQ(back[5], 0.0f);
}

// The scale is searched for least squared error (quant.cpp): never worse than llama.cpp's rule
// (d = m / -8 for the element m of largest magnitude), and every element within two steps.
TEST(Quantize, Q4_0ScaleSearchBeatsTheSimpleRule) {
  double total_search = 0, total_simple = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const auto v = random_vector(32, 100 + trial, 1.0f);
    std::vector<uint8_t> q(18);
    std::vector<float> back(32);
    quantize_row(QuantType::kQ4_0, v.data(), 32, q.data());
    dequantize_row(QuantType::kQ4_0, q.data(), 32, back.data());
    float m = 0;
    for (float x : v)
      if (std::fabs(x) > std::fabs(m)) m = x;
    const float d_simple = float_from_fp16(fp16_from_float(m / -8.0f));
    const float d = std::fabs(float_from_fp16(static_cast<uint16_t>(q[0] | q[1] << 8)));
    double sse = 0, sse_simple = 0;
    for (int i = 0; i < 32; ++i) {
      // At most two steps: an element opposite in sign to m may clamp at +7 (so may it under
      // the simple rule, by one step).
      ASSERT_LE(std::fabs(back[i] - v[i]), 2 * d * 1.0001) << trial << " " << i;
      sse += (back[i] - v[i]) * (back[i] - v[i]);
      const int code = std::clamp((int)std::floor(v[i] / d_simple + 8.5f), 0, 15);
      const double e = v[i] - (double)d_simple * (code - 8);
      sse_simple += e * e;
    }
    ASSERT_LE(sse, sse_simple * (1 + 1e-5) + 1e-9) << trial;  // equal when the rule is best (float vs double sums)
    total_search += sse;
    total_simple += sse_simple;
  }
  EXPECT_LT(total_search, 0.9 * total_simple);  // and clearly better on average
}

// Per-column importance (quant.h): all ones is the unweighted search, bit for bit; otherwise
// the weighted squared error is never above llama.cpp's rule's, and on average clearly below
// what the search ignoring the weights leaves (the reason to weigh at all).
TEST(Quantize, Q4_0ImportanceWeighsTheError) {
  const std::vector<float> ones(64, 1.0f);
  double weighted_total = 0, unweighted_total = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const auto v = random_vector(64, 500 + trial, 1.0f);
    std::vector<uint8_t> q(36), q_ones(36), q_plain(36);
    quantize_row(QuantType::kQ4_0, v.data(), 64, q_plain.data());
    quantize_row(QuantType::kQ4_0, v.data(), 64, q_ones.data(), ones.data());
    ASSERT_EQ(q_ones, q_plain) << trial;
    // Gains spread over two orders of magnitude, as an RMSNorm's can be, squared.
    auto g = random_vector(64, 900 + trial, 1.0f);
    std::vector<float> w(64);
    for (int i = 0; i < 64; ++i) w[i] = std::pow(10.0f, 2.0f * g[i]);
    quantize_row(QuantType::kQ4_0, v.data(), 64, q.data(), w.data());
    std::vector<float> back(64), back_plain(64);
    dequantize_row(QuantType::kQ4_0, q.data(), 64, back.data());
    dequantize_row(QuantType::kQ4_0, q_plain.data(), 64, back_plain.data());
    for (int b = 0; b < 2; ++b) {
      float m = 0;
      for (int i = 32 * b; i < 32 * b + 32; ++i)
        if (std::fabs(v[i]) > std::fabs(m)) m = v[i];
      const float d_rule = float_from_fp16(fp16_from_float(m / -8.0f));
      double sse = 0, sse_plain = 0, sse_rule = 0;
      for (int i = 32 * b; i < 32 * b + 32; ++i) {
        const int code = std::clamp((int)std::floor(v[i] / d_rule + 8.5f), 0, 15);
        const double e_rule = v[i] - (double)d_rule * (code - 8);
        sse += w[i] * (double)(back[i] - v[i]) * (back[i] - v[i]);
        sse_plain += w[i] * (double)(back_plain[i] - v[i]) * (back_plain[i] - v[i]);
        sse_rule += w[i] * e_rule * e_rule;
      }
      ASSERT_LE(sse, sse_rule * (1 + 1e-5) + 1e-9) << trial << " block " << b;
      weighted_total += sse;
      unweighted_total += sse_plain;
    }
  }
  EXPECT_LT(weighted_total, 0.9 * unweighted_total);
}

// C = A Wq^T computed in float64 from the quantized operands: the GEMM's exact answer. With
// quantize_a false, A enters as it is (the many-row path: dequantized weights, fp32 GEMM).
std::vector<double> reference(int M, int N, int K, const std::vector<float>& A, QuantType t,
                              const std::vector<uint8_t>& B, int ldb, std::vector<double>* magnitude,
                              bool quantize_a) {
  std::vector<double> C((size_t)M * N);
  magnitude->assign(C.size(), 0.0);
  std::vector<float> aq(K), w(ldb);
  std::vector<uint8_t> ablocks(quant_row_bytes(QuantType::kQ8_0, K));
  for (int m = 0; m < M; ++m) {
    quantize_activation_row(A.data() + (size_t)m * K, K, ablocks.data());
    dequantize_row(QuantType::kQ8_0, ablocks.data(), K, aq.data());
    if (!quantize_a) std::copy(A.begin() + (size_t)m * K, A.begin() + (size_t)(m + 1) * K, aq.begin());
    for (int n = 0; n < N; ++n) {
      dequantize_row(t, B.data() + n * quant_row_bytes(t, ldb), ldb, w.data());
      double s = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        s += (double)aq[k] * w[k];
        mag += std::fabs((double)aq[k] * w[k]);
      }
      C[(size_t)m * N + n] = s;
      (*magnitude)[(size_t)m * N + n] = mag;
    }
  }
  return C;
}

TEST(GemmQuant, MatchesTheExactProductOfTheQuantizedOperands) {
  // From M = 9 on the SIMD entry takes the many-row (interleaved) kernel: tails of rows (9, 16)
  // and of weight-row groups (N not a multiple of 8), K not whole blocks (72, 100), threads (the
  // last).
  // Few rows with whole groups of 4 blocks and tails of 1-3 (Q4_0's four-block kernel): 1408,
  // 544, 100 (one group, its last block partial), 160.
  const std::vector<std::array<int, 4>> shapes = {{1, 37, 64, 64},   {2, 5, 96, 96},   {3, 40, 100, 128},
                                                  {4, 17, 32, 32},   {5, 33, 160, 160}, {9, 70, 256, 256},
                                                  {1, 3, 20, 64},    {16, 20, 72, 72}, {64, 20, 640, 640},
                                                  {1, 45, 1408, 1408}, {2, 19, 544, 544}};
  for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    for (const auto [M, N, K, ldb] : shapes) {
      const auto A = random_vector((size_t)M * K, M * 131 + K, 1.0f);
      const auto W = random_vector((size_t)N * ldb, N * 7 + ldb, 0.5f);
      std::vector<uint8_t> B(N * quant_row_bytes(t, ldb));
      quantize_rows(t, W.data(), N, ldb, B.data());
      // The build's SIMD kernels (few rows; many rows: the interleaved kernel), the portable one
      // (the lower ISAs), and the many-row path of builds without AVX2 (A unquantized times the
      // dequantized weights through the fp32 GEMM) on the same operands.
      for (const char* variant : {"simd", "avx2", "portable", "via fp32"}) {
        const std::string v = variant;
        const bool quantize_a = v == "portable" || ((v == "simd" || v == "avx2") && !gemm_quant_dequantizes(M));
        std::vector<double> mag;
        const auto ref = reference(M, N, K, A, t, B, ldb, &mag, quantize_a);
        std::vector<float> C((size_t)M * N, 3.0f);
        (v == "simd"       ? gemm_nt_quant
         : v == "avx2"     ? gemm_nt_quant_avx2
         : v == "portable" ? gemm_nt_quant_portable
                           : gemm_nt_quant_via_fp32)(M, N, K, A.data(), K, t, B.data(), ldb, C.data(), N, 0.5f);
        for (size_t i = 0; i < C.size(); ++i) {
          // fp32 rounding: of each block's scale product and the running sum over K/32 blocks
          // (integer path), or of a K-term fp32 dot product (fp32 GEMM).
          const double terms = quantize_a ? quant_blocks(K) + 4 : K + 4;
          const double tol = mag[i] * terms * std::ldexp(1.0, -23) + 1e-6;
          ASSERT_NEAR(C[i], ref[i] + 1.5, tol) << quant_type_name(t) << " " << v
                                               << " M=" << M << " N=" << N << " K=" << K << " i=" << i;
        }
      }
    }
  }
}

// The few-row kernels (decoding) give each row of activations the same bits whatever batch it
// is in (1 to kMaxDecodeRows rows): a request decodes the same tokens alone or batched with
// others (the server's batched step). Q8_0's widest kernel (AVX-512: two blocks per register)
// and AVX2's give the same bits too: their lanes are each other's accumulators. Q4_0's widest
// kernel with VBMI takes four blocks per step and sums in another order, so across ISAs it is
// held to the float64 bound of MatchesTheExactProductOfTheQuantizedOperands instead. Odd block
// counts and block counts not a multiple of 4 (the tails), beta 0 and 1.
TEST(GemmQuant, FewRowKernelsGiveEachRowTheSameBitsInAnyBatch) {
  using Gemm = void (*)(int, int, int, const float*, int, QuantType, const uint8_t*, int, float*, int, float);
  for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    for (const int K : {32, 96, 160, 512, 544, 1408}) {
      const int N = 45, ldb = K;
      const auto W = random_vector((size_t)N * ldb, K + 5, 0.5f);
      std::vector<uint8_t> B(N * quant_row_bytes(t, ldb));
      quantize_rows(t, W.data(), N, ldb, B.data());
      const auto A = random_vector((size_t)kMaxDecodeRows * K, 17 + K, 2.0f);
      for (Gemm gemm : {static_cast<Gemm>(gemm_nt_quant), static_cast<Gemm>(gemm_nt_quant_avx2)}) {
        const char* which = gemm == static_cast<Gemm>(gemm_nt_quant) ? "widest" : "avx2";
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> alone((size_t)kMaxDecodeRows * N, 0.75f);
          for (int m = 0; m < kMaxDecodeRows; ++m)
            gemm(1, N, K, A.data() + (size_t)m * K, K, t, B.data(), ldb, alone.data() + (size_t)m * N, N, beta);
          for (int M = 2; M <= kMaxDecodeRows; ++M) {
            std::vector<float> batch((size_t)M * N, 0.75f);
            gemm(M, N, K, A.data(), K, t, B.data(), ldb, batch.data(), N, beta);
            ASSERT_TRUE(std::equal(batch.begin(), batch.end(), alone.begin()))
                << quant_type_name(t) << " " << which << " M=" << M << " K=" << K << " beta=" << beta;
          }
          if (t == QuantType::kQ8_0 && gemm == static_cast<Gemm>(gemm_nt_quant)) {
            std::vector<float> avx2((size_t)kMaxDecodeRows * N, 0.75f);
            gemm_nt_quant_avx2(kMaxDecodeRows, N, K, A.data(), K, t, B.data(), ldb, avx2.data(), N, beta);
            ASSERT_EQ(alone, avx2) << "K=" << K << " beta=" << beta;
          }
        }
      }
    }
  }
}

TEST(GemmQuant, ActivationTiesRoundHalfAwayFromZeroAsTheReference) {
  // Each block's largest magnitude is 127, so its scale is exactly 1 and every x + 0.5 is a tie
  // the activation quantizer must round away from zero (std::round, as quant.h's Q8_0 rule): a
  // vectorized quantizer rounding ties to even would change these integers by one step, far
  // beyond the fp32 tolerance. Few rows (decoding) and many (the interleaved kernel).
  const int K = 96, N = 19;
  for (int M : {1, 3, 11}) {
    std::vector<float> A((size_t)M * K);
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k)
        A[(size_t)m * K + k] = k % 32 == 5 ? (m % 2 ? -127.0f : 127.0f) : ((k * 7 + m * 3) % 61 - 30) + 0.5f;
    const auto W = random_vector((size_t)N * K, 91, 0.5f);
    for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
      std::vector<uint8_t> B(N * quant_row_bytes(t, K));
      quantize_rows(t, W.data(), N, K, B.data());
      std::vector<double> mag;
      const auto ref = reference(M, N, K, A, t, B, K, &mag, !gemm_quant_dequantizes(M));
      std::vector<float> C((size_t)M * N);
      gemm_nt_quant(M, N, K, A.data(), K, t, B.data(), K, C.data(), N, 0.0f);
      for (size_t i = 0; i < C.size(); ++i)
        ASSERT_NEAR(C[i], ref[i], mag[i] * (quant_blocks(K) + 4) * std::ldexp(1.0, -23) + 1e-6)
            << quant_type_name(t) << " M=" << M << " i=" << i;
    }
  }
}

TEST(GemmQuant, ApproximatesTheFp32ProductWithinTheQuantizationBound) {
  const int M = 3, N = 24, K = 128;
  const auto A = random_vector((size_t)M * K, 21, 1.0f);
  const auto W = random_vector((size_t)N * K, 22, 0.5f);
  for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    std::vector<uint8_t> B(N * quant_row_bytes(t, K));
    quantize_rows(t, W.data(), N, K, B.data());
    std::vector<float> C((size_t)M * N);
    gemm_nt_quant(M, N, K, A.data(), K, t, B.data(), K, C.data(), N, 0.0f);
    // |a.w - aq.wq| <= sum |a| |w - wq| + |a - aq| |wq|, each error at most about half a step of
    // its block (1/127 of the block's max for Q8_0, 1/8 for Q4_0), with fp16 scales.
    const double step_w = t == QuantType::kQ8_0 ? 1.0 / 127 : 1.0 / 8;
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double exact = 0, bound = 0;
        for (int b = 0; b < K / 32; ++b) {
          double amax = 0, wmax = 0;
          for (int i = b * 32; i < b * 32 + 32; ++i) {
            amax = std::max(amax, (double)std::fabs(A[m * K + i]));
            wmax = std::max(wmax, (double)std::fabs(W[n * K + i]));
          }
          for (int i = b * 32; i < b * 32 + 32; ++i) {
            exact += (double)A[m * K + i] * W[n * K + i];
            bound += std::fabs(A[m * K + i]) * (wmax * step_w * 0.51) +
                     (amax / 127 * 0.51) * (std::fabs(W[n * K + i]) + wmax * step_w);
          }
        }
        EXPECT_NEAR(C[m * N + n], exact, bound) << quant_type_name(t) << " " << m << "," << n;
        EXPECT_GT(bound, 0.0);
      }
  }
}

TEST(GemmQuant, DispatchThroughWeightRefAndBlockOffsets) {
  const int N = 6, K = 96;
  const auto A = random_vector(K, 1, 1.0f);
  const auto W = random_vector(N * K, 2, 1.0f);
  std::vector<uint8_t> B(N * quant_row_bytes(QuantType::kQ4_0, K));
  quantize_rows(QuantType::kQ4_0, W.data(), N, K, B.data());
  WeightRef w;
  w.quant = B.data();
  w.quant_type = QuantType::kQ4_0;
  std::vector<float> direct(N), via(N), tail(N), tail_direct(N);
  gemm_nt_quant(1, N, K, A.data(), K, QuantType::kQ4_0, B.data(), K, direct.data(), N, 0.0f);
  gemm_nt(1, N, K, A.data(), K, w, K, via.data(), N, 0.0f);
  EXPECT_EQ(direct, via);
  // Columns [32, 96) through an offset weight: the same as the last two blocks of each row.
  gemm_nt(1, N, 64, A.data() + 32, K, w.offset(32), K, tail.data(), N, 0.0f);
  std::vector<float> A2(K, 0.0f);
  std::copy(A.begin() + 32, A.end(), A2.begin() + 32);
  gemm_nt_quant(1, N, K, A2.data(), K, QuantType::kQ4_0, B.data(), K, tail_direct.data(), N, 0.0f);
  for (int n = 0; n < N; ++n)
    EXPECT_NEAR(tail[n], tail_direct[n], 1e-5f * (1 + std::fabs(tail_direct[n])));
  EXPECT_THROW(w.offset(40), Error);
}

TEST(QuantTypeNames, ParseAndRefuse) {
  EXPECT_EQ(parse_quant_type("q8_0"), QuantType::kQ8_0);
  EXPECT_EQ(parse_quant_type("q4_0"), QuantType::kQ4_0);
  EXPECT_STREQ(quant_type_name(QuantType::kQ4_0), "q4_0");
  EXPECT_THROW(parse_quant_type("q4_1"), Error);
}

}  // namespace
}  // namespace chainlm
