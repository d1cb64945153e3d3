// The GEMM wrappers against a naive product, including the few-row path of decoding steps and
// its chunked form for up to kMaxStreamedRows rows.
#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include <vector>

#include "gradcheck.h"

namespace chainlm {
namespace {

using test::random_vector;

// Each row count on both sides of kMaxDecodeRows and kMaxStreamedRows, and with K = 45 (one
// block of weight rows in the chunked path), K = 704 (several, and a masked tail) and K = 1408
// (rows in passes of 4 on AVX-512: gemm.cpp rows_per_pass).
void expect_nt_matches_naive(int N, int K, int lda, int ldb, int ldc) {
  for (int M : {1, 2, 3, 4, 5, 7, 8, 9, 16, 33, kMaxStreamedRows - 1, kMaxStreamedRows,
                kMaxStreamedRows + 1}) {
    for (float beta : {0.0f, 1.0f, 0.5f}) {
      const auto A = random_vector((size_t)M * lda, 1 + M), B = random_vector((size_t)N * ldb, 2);
      const auto C0 = random_vector((size_t)M * ldc, 3);
      std::vector<float> C = C0;
      gemm_nt(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < ldc; ++n) {
          double want = C0[(size_t)m * ldc + n];
          if (n < N) {
            double dot = 0;
            for (int k = 0; k < K; ++k) dot += (double)A[(size_t)m * lda + k] * B[(size_t)n * ldb + k];
            want = dot + beta * want;
          }
          ASSERT_NEAR(C[(size_t)m * ldc + n], want, 2e-6 * K)
              << "M " << M << " K " << K << " beta " << beta;
        }
    }
  }
}

TEST(Gemm, NtMatchesNaiveForEveryRowCount) {
  expect_nt_matches_naive(67, 45, 50, 47, 70);
  expect_nt_matches_naive(67, 704, 710, 707, 70);
  expect_nt_matches_naive(67, 1408, 1411, 1409, 70);
}

}  // namespace
}  // namespace chainlm
