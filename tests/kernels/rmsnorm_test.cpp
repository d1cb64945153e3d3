#include "kernels/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"

namespace chainlm {
namespace {

using test::expect_close;
using test::random_vector;

// Per-chain RMSNorm in double.
std::vector<double> reference(const ChainSplit& s, int k, int M, const std::vector<double>& x,
                              const std::vector<double>& g, double eps) {
  const int D = s.total();
  std::vector<double> y((size_t)M * D, 0.0);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < k; ++c) {
      double ss = 0;
      for (int j = s.begin(c); j < s.end(c); ++j) ss += x[(size_t)r * D + j] * x[(size_t)r * D + j];
      const double inv = 1.0 / std::sqrt(ss / s.width(c) + eps);
      for (int j = s.begin(c); j < s.end(c); ++j) y[(size_t)r * D + j] = x[(size_t)r * D + j] * inv * g[j];
    }
  return y;
}

TEST(RmsNorm, ForwardMatchesReferencePerChain) {
  for (auto chains : {std::vector<int>{1}, std::vector<int>{1, 1}, std::vector<int>{1, 2, 1}}) {
    ChainSplit s(16, chains);
    const int M = 4;
    for (int k = 1; k <= s.n(); ++k) {
      auto x = random_vector((size_t)M * 16, 1);
      auto g = random_vector(16, 2);
      std::vector<float> y((size_t)M * 16), rstd((size_t)M * s.n());
      rmsnorm_forward(s, k, M, x.data(), 16, g.data(), 1e-5f, y.data(), 16, rstd.data());
      auto ref = reference(s, k, M, test::to_double(x), test::to_double(g), 1e-5);
      for (int r = 0; r < M; ++r)
        expect_close(y.data() + r * 16, ref.data() + r * 16, s.prefix(k), 1e-5, 1e-5, "y");
    }
  }
}

// The bf16 form writes to_bf16 of the fp32 form's output, bit for bit, in the active chains'
// columns only, and the same rstd.
TEST(RmsNorm, Bf16OutputIsTheRoundedFp32Output) {
  ChainSplit s(96, {1, 2, 1});
  const int M = 19, ld = 100;
  for (int k = 1; k <= s.n(); ++k) {
    auto x = random_vector((size_t)M * ld, 7, 3.0f);
    auto g = random_vector(96, 8);
    std::vector<float> y((size_t)M * ld), rstd((size_t)M * s.n()), rstd2 = rstd;
    rmsnorm_forward(s, k, M, x.data(), ld, g.data(), 1e-5f, y.data(), ld, rstd.data());
    const bf16_t kUntouched = 0x1234;
    std::vector<bf16_t> yh((size_t)M * ld, kUntouched);
    rmsnorm_forward(s, k, M, x.data(), ld, g.data(), 1e-5f, yh.data(), ld, rstd2.data());
    EXPECT_EQ(rstd, rstd2);
    for (int r = 0; r < M; ++r)
      for (int j = 0; j < ld; ++j) {
        const size_t i = (size_t)r * ld + j;
        if (j < s.prefix(k))
          ASSERT_EQ(yh[i], to_bf16(y[i])) << "k " << k << " row " << r << " column " << j;
        else
          ASSERT_EQ(yh[i], kUntouched) << "k " << k << " row " << r << " column " << j;
      }
  }
}

TEST(RmsNorm, ChainIsNormalizedIndependently) {
  // Scaling chain 1's input must leave chain 0's output bit-identical.
  ChainSplit s(8, {1, 1});
  auto x = random_vector(8, 3);
  auto g = random_vector(8, 4);
  std::vector<float> y1(8), y2(8), rstd(2);
  rmsnorm_forward(s, 2, 1, x.data(), 8, g.data(), 1e-5f, y1.data(), 8, rstd.data());
  for (int j = 4; j < 8; ++j) x[j] *= 100.0f;
  rmsnorm_forward(s, 2, 1, x.data(), 8, g.data(), 1e-5f, y2.data(), 8, rstd.data());
  for (int j = 0; j < 4; ++j) EXPECT_EQ(y1[j], y2[j]);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  ChainSplit s(12, {1, 2});
  const int M = 3, D = 12;
  for (int k = 1; k <= 2; ++k) {
    auto x = random_vector((size_t)M * D, 5);
    auto g = random_vector(D, 6);
    auto proj = random_vector((size_t)M * D, 7);
    std::vector<float> y((size_t)M * D), rstd((size_t)M * 2);
    rmsnorm_forward(s, k, M, x.data(), D, g.data(), 1e-5f, y.data(), D, rstd.data());
    std::vector<float> dx((size_t)M * D, 0.5f), dg(D, -1.0f);
    rmsnorm_backward(s, k, M, x.data(), D, g.data(), rstd.data(), proj.data(), D, dx.data(), D,
                     dg.data());
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& gs) {
      auto yr = reference(s, k, M, xs, gs, 1e-5);
      double t = 0;
      for (size_t i = 0; i < yr.size(); ++i) t += yr[i] * proj[i];
      return t;
    };
    auto xd = test::to_double(x), gd = test::to_double(g);
    auto nx = test::numeric_grad([&](const std::vector<double>& v) { return loss(v, gd); }, xd);
    auto ng = test::numeric_grad([&](const std::vector<double>& v) { return loss(xd, v); }, gd);
    for (auto& v : nx) v += 0.5;
    for (auto& v : ng) v -= 1.0;
    expect_close(dx, nx, nx.size(), 1e-4, 1e-4, "dx");
    expect_close(dg, ng, ng.size(), 1e-4, 1e-4, "dgain");
  }
}

}  // namespace
}  // namespace chainlm
