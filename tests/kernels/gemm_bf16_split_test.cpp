// bf16 products large enough that oneDNN's matmul runs once per thread on a block of C's rows
// (onednn_matmul.cpp, split_by_rows): every form against a float64 product of the same bf16
// operands at fp32's rounding tolerance, rows that do not divide into blocks of 32, beta 0 and 1,
// and the thread count the caller set left as it was. (Without bf16 instructions the same
// products take the rounded-operand path and are checked the same way.)
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "core/threads.h"
#include "gradcheck.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"

namespace chainlm {
namespace {

using test::random_vector;

struct Form {
  char kind;  // t: C = A B^T, n: C = A B, T: C = A^T B
  int M, N, K;
};

TEST(GemmBf16Split, ProductsSplitByRowsMatchFloat64OfTheirBf16Operands) {
  const int threads_before = omp_get_max_threads();
  set_num_threads(2);
  // Each form past its split threshold at 2 threads: forward from 32 rows a thread, input
  // gradient from 512, weight gradient from 256 rows and 1024 tokens.
  for (const Form f : {Form{'t', 1100, 45, 70}, Form{'n', 1100, 37, 66}, Form{'T', 530, 41, 1030}}) {
    SCOPED_TRACE(::testing::Message() << f.kind << " M " << f.M << " N " << f.N << " K " << f.K);
    const int ldc = f.N + 3;
    // A: (M, K), or (K, M) for the weight gradient; B: (N, K) for the forward, else (K, N).
    const int a_rows = f.kind == 'T' ? f.K : f.M, a_cols = f.kind == 'T' ? f.M : f.K;
    const int b_rows = f.kind == 't' ? f.N : f.K, b_cols = f.kind == 't' ? f.K : f.N;
    const int lda = a_cols + 5, ldb = b_cols + 2;
    std::vector<bf16_t> A((size_t)a_rows * lda), B((size_t)b_rows * ldb);
    to_bf16(random_vector(A.size(), 31).data(), A.data(), A.size());
    to_bf16(random_vector(B.size(), 32).data(), B.data(), B.size());
    const auto C0 = random_vector((size_t)f.M * ldc, 33);
    for (float beta : {0.0f, 1.0f}) {
      std::vector<float> C = C0;
      if (f.kind == 't') gemm_nt_bf16(f.M, f.N, f.K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
      if (f.kind == 'n') gemm_nn_bf16(f.M, f.N, f.K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
      if (f.kind == 'T') gemm_tn_bf16(f.M, f.N, f.K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
      EXPECT_EQ(omp_get_max_threads(), 2) << "the product changed the caller's thread count";
      for (int m = 0; m < f.M; ++m)
        for (int n = 0; n < ldc; ++n) {
          const size_t at = (size_t)m * ldc + n;
          if (n >= f.N) {
            ASSERT_EQ(C[at], C0[at]) << "written outside C's columns";
            continue;
          }
          double exact = beta * C0[at], magnitude = std::fabs(exact);
          for (int k = 0; k < f.K; ++k) {
            const double a = from_bf16(f.kind == 'T' ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]);
            const double b = from_bf16(f.kind == 't' ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
            exact += a * b;
            magnitude += std::fabs(a * b);
          }
          ASSERT_NEAR(C[at], exact, (f.K + 2) * std::ldexp(1.0, -24) * magnitude * 1.01)
              << "row " << m << " column " << n;
        }
    }
  }
  set_num_threads(threads_before);
}

}  // namespace
}  // namespace chainlm
