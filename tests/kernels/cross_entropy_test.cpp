#include "kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"

namespace chainlm {
namespace {

double reference_loss(const std::vector<double>& logits, int M, int V, const std::vector<int>& t) {
  double total = 0;
  for (int r = 0; r < M; ++r) {
    if (t[r] < 0) continue;
    double mx = -1e300;
    for (int j = 0; j < V; ++j) mx = std::max(mx, logits[(size_t)r * V + j]);
    double s = 0;
    for (int j = 0; j < V; ++j) s += std::exp(logits[(size_t)r * V + j] - mx);
    total += mx + std::log(s) - logits[(size_t)r * V + t[r]];
  }
  return total;
}

TEST(CrossEntropy, LossAndGradientMatchReference) {
  const int M = 4, V = 11;
  auto logits = test::random_vector((size_t)M * V, 1, 3.0f);
  std::vector<int> targets = {3, -1, 0, 10};
  std::vector<float> dlogits((size_t)M * V, 9.0f), row((size_t)M);
  const float scale = 0.37f;
  double loss = cross_entropy_forward_backward(M, V, logits.data(), V, targets.data(), scale,
                                               dlogits.data(), row.data());
  auto ld = test::to_double(logits);
  EXPECT_NEAR(loss, reference_loss(ld, M, V, targets), 1e-5);
  EXPECT_EQ(row[1], 0.0f);
  auto num = test::numeric_grad(
      [&](const std::vector<double>& v) { return scale * reference_loss(v, M, V, targets); }, ld);
  test::expect_close(dlogits, num, num.size(), 1e-6, 1e-4, "dlogits");
}

TEST(CrossEntropy, InPlaceGradientEqualsSeparateBuffer) {
  const int M = 3, V = 50;
  auto logits = test::random_vector((size_t)M * V, 2, 5.0f);
  std::vector<int> targets = {1, 49, 7};
  std::vector<float> separate((size_t)M * V);
  cross_entropy_forward_backward(M, V, logits.data(), V, targets.data(), 1.0f, separate.data(), nullptr);
  cross_entropy_forward_backward(M, V, logits.data(), V, targets.data(), 1.0f, logits.data(), nullptr);
  for (size_t i = 0; i < separate.size(); ++i) EXPECT_EQ(separate[i], logits[i]);
}

TEST(CrossEntropy, ExtremeLogitsStayFinite) {
  const int V = 4;
  std::vector<float> logits = {1000.0f, -1000.0f, 0.0f, 999.0f};
  std::vector<int> targets = {1};
  std::vector<float> d(V);
  double loss = cross_entropy_forward_backward(1, V, logits.data(), V, targets.data(), 1.0f, d.data(), nullptr);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, 2000.0 + std::log(1.0 + std::exp(-1.0)), 1e-2);
}

}  // namespace
}  // namespace chainlm
