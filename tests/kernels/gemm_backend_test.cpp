// Every GEMM case (nt, nn, tn; beta 0, 1 and 0.5; odd sizes, padded strides, an empty reduction)
// on each backend against a float64 reference, at a tolerance derived from fp32 rounding: a
// K-term dot product summed in fp32 errs by at most about K * 2^-24 * sum_k |a_k b_k|.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "gradcheck.h"
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"

namespace chainlm {
namespace {

using test::random_vector;

enum class Op { NT, NN, TN };

struct Case {
  Op op;
  int M, N, K;
};

class GemmBackendTest : public ::testing::TestWithParam<std::tuple<GemmBackend, Case>> {
 protected:
  void SetUp() override {
    chosen_ = gemm_backend();
    set_gemm_backend(std::get<0>(GetParam()));
  }
  void TearDown() override { set_gemm_backend(chosen_); }  // the other tests run on the default
  GemmBackend chosen_ = GemmBackend::OpenBlas;
};

TEST_P(GemmBackendTest, MatchesFloat64Reference) {
  const Case c = std::get<1>(GetParam());
  const int M = c.M, N = c.N, K = c.K;
  // Row strides wider than the rows, so a kernel reading or writing past them shows.
  const bool ta = c.op == Op::TN, tb = c.op == Op::NT;
  const int a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  const int lda = a_cols + 3, ldb = b_cols + 5, ldc = N + 2;
  const auto A = random_vector((size_t)a_rows * lda, 1), B = random_vector((size_t)b_rows * ldb, 2);
  const auto C0 = random_vector((size_t)M * ldc, 3);
  auto a = [&](int m, int k) { return (double)(ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]); };
  auto b = [&](int k, int n) { return (double)(tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]); };
  for (float beta : {0.0f, 1.0f, 0.5f}) {
    std::vector<float> C = C0;
    if (c.op == Op::NT) gemm_nt(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
    if (c.op == Op::NN) gemm_nn(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
    if (c.op == Op::TN) gemm_tn(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, beta);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < ldc; ++n) {
        const double c0 = C0[(size_t)m * ldc + n];
        if (n >= N) {  // padding between rows: never written
          ASSERT_EQ(C[(size_t)m * ldc + n], C0[(size_t)m * ldc + n]) << "m " << m << " n " << n;
          continue;
        }
        double want = beta * c0, magnitude = std::fabs(beta * c0);
        for (int k = 0; k < K; ++k) {
          want += a(m, k) * b(k, n);
          magnitude += std::fabs(a(m, k) * b(k, n));
        }
        const double tol = (K + 2) * std::ldexp(1.0, -24) * magnitude + 1e-30;
        ASSERT_NEAR(C[(size_t)m * ldc + n], want, tol) << "m " << m << " n " << n << " beta " << beta;
      }
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<GemmBackend, Case>>& info) {
  const Case c = std::get<1>(info.param);
  const char* op = c.op == Op::NT ? "nt" : c.op == Op::NN ? "nn" : "tn";
  return std::string(gemm_backend_name(std::get<0>(info.param))) + "_" + op + "_" +
         std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GemmBackendTest,
    ::testing::Combine(::testing::Values(GemmBackend::OneDnn, GemmBackend::OpenBlas),
                       ::testing::Values(Case{Op::NT, 9, 67, 45}, Case{Op::NT, 33, 17, 130},
                                         Case{Op::NT, 64, 96, 64}, Case{Op::NT, 1, 300, 70},
                                         Case{Op::NT, 5, 40, 31}, Case{Op::NT, 12, 7, 0},
                                         Case{Op::NN, 9, 67, 45}, Case{Op::NN, 130, 33, 17},
                                         Case{Op::NN, 1, 64, 100}, Case{Op::NN, 11, 5, 0},
                                         Case{Op::TN, 9, 67, 45}, Case{Op::TN, 64, 48, 200},
                                         Case{Op::TN, 3, 129, 1}, Case{Op::TN, 7, 6, 0})),
    case_name);

// The same product on both backends: within twice the rounding bound of each other, so a
// backend that computed something else would show even where the reference tolerance is loose.
TEST(GemmBackend, BackendsAgree) {
  const int M = 100, N = 90, K = 80;
  const auto A = random_vector((size_t)M * K, 4), B = random_vector((size_t)N * K, 5);
  const GemmBackend chosen = gemm_backend();
  std::vector<float> C[2];
  for (int i = 0; i < 2; ++i) {
    set_gemm_backend(i == 0 ? GemmBackend::OneDnn : GemmBackend::OpenBlas);
    C[i].assign((size_t)M * N, 0.0f);
    gemm_nt(M, N, K, A.data(), K, B.data(), K, C[i].data(), N, 0.0f);
  }
  set_gemm_backend(chosen);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double magnitude = 0;
      for (int k = 0; k < K; ++k) magnitude += std::fabs((double)A[(size_t)m * K + k] * B[(size_t)n * K + k]);
      ASSERT_NEAR(C[0][(size_t)m * N + n], C[1][(size_t)m * N + n],
                  2 * (K + 2) * std::ldexp(1.0, -24) * magnitude)
          << m << ", " << n;
    }
}

// The same product with dense operands and with each operand a block of a wider matrix gives the
// same bits on either backend: CoLM's sub-model k reads a prefix of wider activations where the
// same sub-model extracted on its own reads them dense, and the two must agree exactly. (oneDNN
// 2.6 ran dense fp32 operands on brgemm and strided ones on its jit GEMM, which round
// differently, on AVX-512 CPUs; on AVX2 both are the jit GEMM, so this fails only there.)
TEST(GemmBackend, ResultsDoNotDependOnStrides) {
  const GemmBackend chosen = gemm_backend();
  for (GemmBackend backend : {GemmBackend::OneDnn, GemmBackend::OpenBlas}) {
    set_gemm_backend(backend);
    for (Op op : {Op::NT, Op::NN, Op::TN}) {
      const int M = 12, N = 48, K = 64, pad = 32;  // the shape of a failing chain block
      const bool ta = op == Op::TN, tb = op == Op::NT;
      const int a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
      const auto A = random_vector((size_t)a_rows * (a_cols + pad), 6);
      const auto B = random_vector((size_t)b_rows * (b_cols + pad), 7);
      // rows x cols of src (rows src_ld apart) into a buffer with rows dst_ld apart.
      auto block = [](const float* src, int rows, int cols, int src_ld, int dst_ld) {
        std::vector<float> dst((size_t)rows * dst_ld, 0.0f);
        for (int r = 0; r < rows; ++r)
          for (int c = 0; c < cols; ++c) dst[(size_t)r * dst_ld + c] = src[(size_t)r * src_ld + c];
        return dst;
      };
      const auto Ad = block(A.data(), a_rows, a_cols, a_cols + pad, a_cols);
      const auto Bd = block(B.data(), b_rows, b_cols, b_cols + pad, b_cols);
      const auto C0 = random_vector((size_t)M * N, 8);  // what beta = 1 accumulates onto
      auto run = [&](float beta, const float* a, int lda, const float* b, int ldb, int ldc) {
        std::vector<float> C = block(C0.data(), M, N, N, ldc);
        if (op == Op::NT) gemm_nt(M, N, K, a, lda, b, ldb, C.data(), ldc, beta);
        if (op == Op::NN) gemm_nn(M, N, K, a, lda, b, ldb, C.data(), ldc, beta);
        if (op == Op::TN) gemm_tn(M, N, K, a, lda, b, ldb, C.data(), ldc, beta);
        return block(C.data(), M, N, ldc, N);
      };
      for (float beta : {0.0f, 1.0f}) {
        const auto dense = run(beta, Ad.data(), a_cols, Bd.data(), b_cols, N);
        const std::string what = std::string(gemm_backend_name(backend)) + " op " +
                                 std::to_string(static_cast<int>(op)) + " beta " + std::to_string(beta);
        EXPECT_EQ(dense, run(beta, A.data(), a_cols + pad, B.data(), b_cols + pad, N + pad)) << what;
        EXPECT_EQ(dense, run(beta, A.data(), a_cols + pad, Bd.data(), b_cols, N)) << what;
      }
    }
  }
  set_gemm_backend(chosen);
}

}  // namespace
}  // namespace chainlm
