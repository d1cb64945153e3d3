// Batch invariance of the few-row GEMMs that decoding steps use: a row of A multiplied together
// with up to kMaxDecodeRows - 1 other rows (fp32: up to kMaxStreamedRows - 1, the chunked path of
// short prompts) gives the very same bits as the row alone. The server
// batches concurrent requests into one decoding step on this property, so that a request's
// tokens do not depend on which others share its steps (docs/serving.md).
#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

#include "bf16_path.h"
#include "gradcheck.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace chainlm {
namespace {

using test::Bf16Path;
using test::random_vector;

// Row m of the M-row product against the product of that row alone, bit for bit; `gemm` runs
// C(M, N) = A(M, K) . B^T with the weight in one of its forms.
template <typename Gemm>
void expect_rows_independent_of_batch(int N, int K, Gemm gemm, const char* what,
                                      int max_rows = kMaxDecodeRows) {
  const int lda = K + 3, ldc = N + 5;
  const auto A = random_vector((size_t)max_rows * lda, 7);
  for (float beta : {0.0f, 1.0f}) {
    const auto C0 = random_vector((size_t)max_rows * ldc, 8);
    std::vector<float> alone = C0;
    for (int m = 0; m < max_rows; ++m)
      gemm(1, A.data() + (size_t)m * lda, lda, alone.data() + (size_t)m * ldc, ldc, beta);
    for (int M = 2; M <= max_rows; ++M) {
      std::vector<float> batch = C0;
      gemm(M, A.data(), lda, batch.data(), ldc, beta);
      for (int m = 0; m < M; ++m)
        ASSERT_EQ(std::memcmp(batch.data() + (size_t)m * ldc, alone.data() + (size_t)m * ldc, N * sizeof(float)), 0)
            << what << ": row " << m << " of " << M << " rows differs from the row alone (K " << K << ", beta "
            << beta << ")";
    }
  }
}

// K = 1408 takes rows in passes of 4 through the AVX-512 kernel (rows_per_pass), and 5-8 rows
// of K = 1408 or 1001 (a tail past the last 8-float block) in slices of K through the AVX2 one
// (sliced_rows_avx2).
TEST(GemmRows, Fp32RowsDoNotDependOnTheRowsBesideThem) {
  for (int K : {64, 45, 256, 704, 1001, 1408}) {
    const int N = 96;
    const auto B = random_vector((size_t)N * K, 9);
    expect_rows_independent_of_batch(
        N, K,
        [&](int M, const float* A, int lda, float* C, int ldc, float beta) {
          gemm_nt(M, N, K, A, lda, B.data(), K, C, ldc, beta);
        },
        "fp32", kMaxStreamedRows);
  }
}

TEST(GemmRows, Bf16RowsDoNotDependOnTheRowsBesideThem) {
  for (bool emulated : {false, true}) {  // the CPU's bf16 dot products, and the widening kernel
    const Bf16Path path(emulated);
    // K: whole blocks of 64, a last block of 32 and a masked rest; N: tiles of 4 weight rows
    // and a last one of 1, 2 or 3.
    for (auto [N, K] : {std::pair{96, 64}, {96, 45}, {96, 256}, {96, 97}, {37, 160}, {38, 1408}, {39, 13}}) {
      const auto Bf = random_vector((size_t)N * K, 10);
      std::vector<bf16_t> B(Bf.size());
      for (size_t i = 0; i < Bf.size(); ++i) B[i] = to_bf16(Bf[i]);
      expect_rows_independent_of_batch(N, K, [&](int M, const float* A, int lda, float* C, int ldc, float beta) {
        gemm_nt_bf16(M, N, K, A, lda, B.data(), K, C, ldc, beta);
      }, emulated ? "bf16 (rounded operands on the fp32 kernels)" : "bf16 (the CPU's own path)");
    }
  }
}

TEST(GemmRows, QuantizedRowsDoNotDependOnTheRowsBesideThem) {
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    for (int K : {64, 256, 704}) {
      const int N = 96;
      const auto Bf = random_vector((size_t)N * K, 11);
      const size_t row = quant_row_bytes(type, K);
      std::vector<uint8_t> B(row * N);
      for (int n = 0; n < N; ++n) quantize_row(type, Bf.data() + (size_t)n * K, K, B.data() + row * n);
      expect_rows_independent_of_batch(N, K, [&](int M, const float* A, int lda, float* C, int ldc, float beta) {
        gemm_nt_quant(M, N, K, A, lda, type, B.data(), K, C, ldc, beta);
      }, quant_type_name(type));
    }
  }
}

// The same for columns: the bf16 and quantized few-row kernels take weight rows in pairs (or
// tiles of two) and reduce their sums together, the odd one alone, so a weight row's result
// must not depend on which row it is paired with, nor on where a thread's share starts (a
// product's column offset, the thread count). The product of weight rows 1..N-1 against columns
// 1..N-1 of the product of all N, bit for bit, for 1 to kMaxDecodeRows rows of A.
TEST(GemmRows, Bf16AndQuantizedColumnsDoNotDependOnTheColumnsBesideThem) {
  const int N = 37, lda = 1411, ldc = N + 2;
  for (int K : {160, 1408}) {
    const auto Bf = random_vector((size_t)N * K, 12);
    const auto A = random_vector((size_t)kMaxDecodeRows * lda, 13);
    std::vector<bf16_t> B16(Bf.size());
    for (size_t i = 0; i < Bf.size(); ++i) B16[i] = to_bf16(Bf[i]);
    std::vector<std::vector<uint8_t>> Bq(2);
    const QuantType types[] = {QuantType::kQ8_0, QuantType::kQ4_0};
    for (int t = 0; t < 2; ++t) {
      Bq[t].resize(quant_row_bytes(types[t], K) * N);
      quantize_rows(types[t], Bf.data(), N, K, Bq[t].data());
    }
    for (int form = 0; form < 3; ++form) {
      auto gemm = [&](int M, int first,
                      float* C) {  // weight rows first..N-1 into C's columns from first
        if (form == 0)
          gemm_nt_bf16(M, N - first, K, A.data(), lda, B16.data() + (size_t)first * K, K, C + first,
                       ldc, 0.0f);
        else
          gemm_nt_quant(M, N - first, K, A.data(), lda, types[form - 1],
                        Bq[form - 1].data() + quant_row_bytes(types[form - 1], K) * first, K,
                        C + first, ldc, 0.0f);
      };
      const char* what = form == 0 ? "bf16" : quant_type_name(types[form - 1]);
      for (int M = 1; M <= kMaxDecodeRows; ++M) {
        std::vector<float> all((size_t)M * ldc, 0.0f), shifted((size_t)M * ldc, 0.0f);
        gemm(M, 0, all.data());
        gemm(M, 1, shifted.data());
        for (int m = 0; m < M; ++m)
          ASSERT_EQ(std::memcmp(all.data() + (size_t)m * ldc + 1,
                                shifted.data() + (size_t)m * ldc + 1, (N - 1) * sizeof(float)),
                    0)
              << what << ": " << M << " rows, K " << K
              << ": a column's bits depend on its neighbours";
      }
    }
  }
}

}  // namespace
}  // namespace chainlm
