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

}  // namespace
}  // namespace chainlm
