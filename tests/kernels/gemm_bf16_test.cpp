// bf16 conversion and the bf16 GEMM (bf16 weights, A rounded to bf16, fp32 sums). The product is
// checked twice: against a float64 product of the same bf16 operands at fp32's rounding
// tolerance, and against the fp32 operands they were rounded from at bf16's: each operand moves
// by at most 2^-8 of itself, so a product by at most (2^-7 + 2^-16) of itself.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <algorithm>
#include <utility>
#include <limits>
#include <vector>

#include "bf16_path.h"
#include "gradcheck.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"

namespace chainlm {
namespace {

using test::Bf16Path;
using test::random_vector;


TEST(Bf16, ConversionRoundsToNearestEvenAndKeepsSpecialValues) {
  EXPECT_EQ(to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(to_bf16(0.0f), 0x0000);
  EXPECT_EQ(to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits in the low bits only must not become infinity.
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::bit_cast<float>(0x7f800001u)))));
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even one, 1 + 2^-6.
  EXPECT_EQ(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);  // above half
  // The largest finite float rounds up to infinity; a value that rounds to a bf16 normal keeps it.
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  const auto v = random_vector(100000, 7, 10.0f);
  for (float x : v) {
    const float y = from_bf16(to_bf16(x));
    ASSERT_LE(std::fabs(y - x), std::ldexp(std::fabs(x), -8)) << x;
    ASSERT_EQ(to_bf16(y), to_bf16(x)) << x;  // bf16 values convert exactly
  }
  std::vector<bf16_t> h(v.size());
  std::vector<float> back(v.size());
  to_bf16(v.data(), h.data(), v.size());
  from_bf16(h.data(), back.data(), v.size());
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(back[i], from_bf16(to_bf16(v[i]))) << i;
}

TEST(GemmBf16, MatchesTheProductOfItsWeightsAndTheFp32OnesWithinBf16Rounding) {
  for (bool emulated : {false, true}) {
  SCOPED_TRACE(emulated ? "rounded operands on the fp32 kernels" : "the CPU's own path");
  const Bf16Path path(emulated);
  const int ldc = 600;
  // K = 4100: the many-row path widens the weight in panels of 2^21 / K = 511 rows, so N = 600
  // crosses a panel boundary. K = 45 and 97: the few-row dot-product kernel's tails (a full
  // block of 32 pairs before a masked one, after none or after a 64-pair step).
  for (auto [N, K] : {std::pair{40, 70}, std::pair{40, 45}, std::pair{40, 97}, std::pair{530, 70},
                      std::pair{600, 4100}}) {
    const int lda = K + 5, ldb = K + 3;
    const auto B = random_vector((size_t)N * ldb, 2);
    std::vector<bf16_t> Bh(B.size());
    to_bf16(B.data(), Bh.data(), B.size());
    for (int M : {1, 2, 5, 8, 9, 40}) {
      if (K > 1000 && M != 1 && M != 9) continue;  // the long rows: one few-row, one many-row case
      const auto A = random_vector((size_t)M * lda, 1 + M);
      const auto C0 = random_vector((size_t)M * ldc, 3);
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> C = C0;
        gemm_nt_bf16(M, N, K, A.data(), lda, Bh.data(), ldb, C.data(), ldc, beta);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < ldc; ++n) {
            const size_t at = (size_t)m * ldc + n;
            if (n >= N) {
              ASSERT_EQ(C[at], C0[at]);
              continue;
            }
            double exact = beta * C0[at], rounded = exact, magnitude = std::fabs(exact);
            for (int k = 0; k < K; ++k) {
              const double a = A[(size_t)m * lda + k], b = B[(size_t)n * ldb + k];
              exact += a * b;
              rounded += (double)from_bf16(to_bf16((float)a)) * from_bf16(Bh[(size_t)n * ldb + k]);
              magnitude += std::fabs(a * b);
            }
            const double fp32_tol = (K + 2) * std::ldexp(1.0, -24) * magnitude * 1.01;
            ASSERT_NEAR(C[at], rounded, fp32_tol) << "M " << M << " N " << N << " n " << n;
            ASSERT_NEAR(C[at], exact, std::ldexp(magnitude, -7) * 1.01 + fp32_tol) << "M " << M << " n " << n;
          }
      }
    }
  }
  }
}

// The backward products of a bf16 step: dx = bf16(dy) W (gemm_nn_bf16, W in bf16) and
// dW = bf16(dy)^T bf16(x) (gemm_tn_bf16), odd sizes and strides, beta 0 and 1.
TEST(GemmBf16, BackwardProductsMatchFloat64OfTheirBf16Operands) {
  auto r = [](float v) { return (double)from_bf16(to_bf16(v)); };
  for (bool emulated : {false, true}) {
  SCOPED_TRACE(emulated ? "rounded operands on the fp32 kernels" : "the CPU's own path");
  const Bf16Path path(emulated);
  for (int M : {1, 9, 33}) {
    const int N = 45, K = 70, lda = 75, ldb = 51, ldc = 47;
    for (bool tn : {false, true}) {
      // nn: A (M, K), B (K, N) bf16.  tn: A (K, M) with lda >= M, B (K, N) fp32.
      const int a_rows = tn ? K : M, a_ld = tn ? std::max(lda, M) : lda;
      const auto A = random_vector((size_t)a_rows * a_ld, 11 + M);
      const auto Bf = random_vector((size_t)K * ldb, 12);
      std::vector<bf16_t> Bh(Bf.size());
      to_bf16(Bf.data(), Bh.data(), Bf.size());
      const auto C0 = random_vector((size_t)M * ldc, 13);
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> C = C0;
        if (tn)
          gemm_tn_bf16(M, N, K, A.data(), a_ld, Bf.data(), ldb, C.data(), ldc, beta);
        else
          gemm_nn_bf16(M, N, K, A.data(), a_ld, Bh.data(), ldb, C.data(), ldc, beta);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < ldc; ++n) {
            const size_t at = (size_t)m * ldc + n;
            if (n >= N) {
              ASSERT_EQ(C[at], C0[at]);
              continue;
            }
            double exact = beta * C0[at], rounded = exact, magnitude = std::fabs(exact);
            for (int k = 0; k < K; ++k) {
              const double a = tn ? A[(size_t)k * a_ld + m] : A[(size_t)m * a_ld + k];
              const double b = Bf[(size_t)k * ldb + n];
              exact += a * b;
              rounded += r((float)a) * r((float)b);
              magnitude += std::fabs(a * b);
            }
            const double fp32_tol = (K + 2) * std::ldexp(1.0, -24) * magnitude * 1.01;
            ASSERT_NEAR(C[at], rounded, fp32_tol) << (tn ? "tn" : "nn") << " M " << M << " n " << n;
            ASSERT_NEAR(C[at], exact, std::ldexp(magnitude, -7) * 1.01 + fp32_tol);
          }
      }
    }
  }
  }
}

// Operands rounded once by the caller (the bf16-A forms) give the same bits as the fp32-A forms
// that round them on the way in: a model that rounds an activation once for several products
// computes what it computed before. Strided operands, few and many rows, beta 0 and 1.
TEST(GemmBf16, PreRoundedOperandsGiveTheSameBitsAsRoundingOnTheWayIn) {
  auto rounded = [](const std::vector<float>& v) {
    std::vector<bf16_t> h(v.size());
    to_bf16(v.data(), h.data(), v.size());
    return h;
  };
  for (bool emulated : {false, true}) {
    const Bf16Path path(emulated);
    for (int M : {3, 20}) {
      const int N = 37, K = 45, lda = 50, ldb = 52, ldc = 40;
      const auto A = random_vector((size_t)std::max(M, K) * lda, 21 + M);
      const auto B = random_vector((size_t)std::max(N, K) * ldb, 22);
      const auto Ah = rounded(A), Bh = rounded(B);
      const auto C0 = random_vector((size_t)M * ldc, 23);
      for (float beta : {0.0f, 1.0f}) {
        std::vector<float> c1 = C0, c2 = C0;
        gemm_nt_bf16(M, N, K, A.data(), lda, Bh.data(), ldb, c1.data(), ldc, beta);
        gemm_nt_bf16(M, N, K, Ah.data(), lda, Bh.data(), ldb, c2.data(), ldc, beta);
        ASSERT_EQ(c1, c2) << "nt M " << M << " emulated " << emulated;
        c1 = c2 = C0;
        gemm_nn_bf16(M, N, K, A.data(), lda, Bh.data(), ldb, c1.data(), ldc, beta);
        gemm_nn_bf16(M, N, K, Ah.data(), lda, Bh.data(), ldb, c2.data(), ldc, beta);
        ASSERT_EQ(c1, c2) << "nn M " << M << " emulated " << emulated;
        c1 = c2 = C0;
        gemm_tn_bf16(M, N, K, A.data(), lda, B.data(), ldb, c1.data(), ldc, beta);
        gemm_tn_bf16(M, N, K, Ah.data(), lda, Bh.data(), ldb, c2.data(), ldc, beta);
        ASSERT_EQ(c1, c2) << "tn M " << M << " emulated " << emulated;
      }
    }
  }
}

TEST(GemmBf16, EmptySumsScaleC) {
  std::vector<float> C = {1.0f, 2.0f, 3.0f, 4.0f};
  const float a = 1.0f;
  const bf16_t b = to_bf16(1.0f);
  gemm_nt_bf16(2, 2, 0, &a, 1, &b, 1, C.data(), 2, 0.5f);
  EXPECT_EQ(C, (std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f}));
  gemm_nn_bf16(2, 2, 0, &a, 1, &b, 2, C.data(), 2, 0.0f);
  EXPECT_EQ(C, (std::vector<float>{0, 0, 0, 0}));
}

}  // namespace
}  // namespace chainlm
