#include "kernels/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"

namespace chainlm {
namespace {

double silu(double x) { return x / (1.0 + std::exp(-x)); }

TEST(SwiGlu, ForwardAndBackwardMatchReference) {
  const int M = 3, W = 7, ld = 9;
  auto a = test::random_vector((size_t)M * ld, 1, 2.0f);
  auto b = test::random_vector((size_t)M * ld, 2);
  auto proj = test::random_vector((size_t)M * ld, 3);
  std::vector<float> g((size_t)M * ld), da((size_t)M * ld), db((size_t)M * ld);
  swiglu_forward(M, W, a.data(), b.data(), g.data(), ld);
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < W; ++j) {
      const size_t i = (size_t)r * ld + j;
      EXPECT_NEAR(g[i], silu(a[i]) * b[i], 1e-6 + 1e-6 * std::fabs(g[i]));
    }
  swiglu_backward(M, W, a.data(), b.data(), proj.data(), da.data(), db.data(), ld);
  auto loss = [&](const std::vector<double>& as, const std::vector<double>& bs) {
    double t = 0;
    for (int r = 0; r < M; ++r)
      for (int j = 0; j < W; ++j) {
        const size_t i = (size_t)r * ld + j;
        t += silu(as[i]) * bs[i] * proj[i];
      }
    return t;
  };
  auto ad = test::to_double(a), bd = test::to_double(b);
  auto na = test::numeric_grad([&](const std::vector<double>& v) { return loss(v, bd); }, ad);
  auto nb = test::numeric_grad([&](const std::vector<double>& v) { return loss(ad, v); }, bd);
  for (int r = 0; r < M; ++r) {
    test::expect_close(da.data() + r * ld, na.data() + r * ld, W, 1e-5, 1e-4, "da");
    test::expect_close(db.data() + r * ld, nb.data() + r * ld, W, 1e-5, 1e-4, "db");
  }
}

// The bf16 forms write to_bf16 of the fp32 forms' outputs, bit for bit, in the first `width`
// columns of each row only (a bf16 training step's GEMM inputs, rounded as they are written).
TEST(SwiGlu, Bf16OutputsAreTheRoundedFp32Outputs) {
  const int M = 37, W = 45, ld = 48;
  auto a = test::random_vector((size_t)M * ld, 4, 6.0f);
  auto b = test::random_vector((size_t)M * ld, 5, 3.0f);
  auto dg = test::random_vector((size_t)M * ld, 6, 2.0f);
  // A zero, a product near fp32's range, and a NaN (kept NaN).
  a[3] = 0.0f, b[3] = 1.0f;
  b[4] = 1e30f, a[4] = 30.0f;
  a[5] = std::nanf("");
  std::vector<float> g((size_t)M * ld), da((size_t)M * ld), db((size_t)M * ld);
  swiglu_forward(M, W, a.data(), b.data(), g.data(), ld);
  swiglu_backward(M, W, a.data(), b.data(), dg.data(), da.data(), db.data(), ld);
  const bf16_t kUntouched = 0x1234;
  std::vector<bf16_t> gh((size_t)M * ld, kUntouched), dah = gh, dbh = gh;
  swiglu_forward(M, W, a.data(), b.data(), gh.data(), ld);
  swiglu_backward(M, W, a.data(), b.data(), dg.data(), dah.data(), dbh.data(), ld);
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < ld; ++j) {
      const size_t i = (size_t)r * ld + j;
      if (j >= W) {
        ASSERT_EQ(gh[i], kUntouched);
        ASSERT_EQ(dah[i], kUntouched);
        ASSERT_EQ(dbh[i], kUntouched);
        continue;
      }
      ASSERT_EQ(gh[i], to_bf16(g[i])) << "row " << r << " column " << j;
      ASSERT_EQ(dah[i], to_bf16(da[i])) << "row " << r << " column " << j;
      ASSERT_EQ(dbh[i], to_bf16(db[i])) << "row " << r << " column " << j;
    }
  EXPECT_TRUE(std::isnan(from_bf16(gh[5])));
}

}  // namespace
}  // namespace chainlm
