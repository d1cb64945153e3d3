#include "kernels/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "gradcheck.h"

namespace chainlm {
namespace {

using test::random_vector;

// llama2.c RoPE in double: pair (2i, 2i+1) rotated by pos * theta^(-2i/hd).
std::vector<double> reference(const std::vector<double>& x, int rows, int n_heads, int hd,
                              int stride, const std::vector<int>& pos, double theta) {
  std::vector<double> y = x;
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < n_heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double a = pos[r] * std::pow(theta, -2.0 * i / hd);
        const size_t at = (size_t)r * stride + (size_t)h * hd + 2 * i;
        y[at] = x[at] * std::cos(a) - x[at + 1] * std::sin(a);
        y[at + 1] = x[at] * std::sin(a) + x[at + 1] * std::cos(a);
      }
  return y;
}

std::vector<int> random_positions(int rows, int max_pos, uint64_t seed) {
  Rng rng(seed);
  std::vector<int> p(rows);
  for (auto& x : p) x = (int)rng.below(max_pos);
  p[0] = max_pos - 1;  // always test the far end
  return p;
}

TEST(Rope, ForwardMatchesDoubleReferenceUpToPosition8192) {
  for (int hd : {2, 8, 64, 128}) {
    const int rows = 37, n_heads = 3, stride = n_heads * hd + 5;
    auto x = random_vector((size_t)rows * stride, 11 + hd);
    auto pos = random_positions(rows, 8192, 7);
    auto ref = reference(test::to_double(x), rows, n_heads, hd, stride, pos, 10000.0);
    auto y = x;
    rope_forward(y.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, RopeScaling{});
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < stride; ++c) {
        const size_t at = (size_t)r * stride + c;
        if (c >= n_heads * hd) {
          EXPECT_EQ(y[at], x[at]) << "padding after the active heads must be untouched";
          continue;
        }
        // Relative to the pair's norm, which the rotation preserves.
        const size_t p0 = at - (c % 2);
        const double norm = std::hypot(ref[p0], ref[p0 + 1]);
        EXPECT_NEAR(y[at], ref[at], 1e-6 * norm + 1e-30)
            << "hd " << hd << " row " << r << " col " << c;
      }
  }
}

TEST(Rope, TableFormEqualsConvenienceFormAndOtherTheta) {
  const int rows = 9, n_heads = 2, hd = 16, stride = 32;
  auto x = random_vector((size_t)rows * stride, 3);
  auto pos = random_positions(rows, 300, 5);
  RopeTable table(hd, 500000.0f, RopeScaling{}, 300);
  auto a = x, b = x;
  rope_forward(table, a.data(), rows, n_heads, stride, pos.data());
  rope_forward(b.data(), rows, n_heads, hd, stride, pos.data(), 500000.0f, RopeScaling{});
  EXPECT_EQ(a, b);
  auto ref = reference(test::to_double(x), rows, n_heads, hd, stride, pos, 500000.0);
  test::expect_close(a, ref, a.size(), 1e-6, 1e-6, "theta 5e5");
}

TEST(Rope, BackwardIsTransposeOfForward) {
  const int rows = 21, n_heads = 4, hd = 64, stride = n_heads * hd;
  auto x = random_vector((size_t)rows * stride, 1);
  auto y = random_vector((size_t)rows * stride, 2);
  auto pos = random_positions(rows, 8192, 3);
  auto rx = x, ry = y;
  rope_forward(rx.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, RopeScaling{});
  rope_backward(ry.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, RopeScaling{});
  double lhs = 0, rhs = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    lhs += (double)rx[i] * y[i];
    rhs += (double)x[i] * ry[i];
    scale += std::fabs((double)x[i] * y[i]);
  }
  EXPECT_NEAR(lhs, rhs, 1e-6 * scale);
  // And the inverse: backward(forward(x)) == x.
  rope_backward(rx.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, RopeScaling{});
  test::expect_close(rx, x, x.size(), 1e-6, 1e-5, "inverse");
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  const int rows = 5, n_heads = 2, hd = 8, stride = 20;
  auto x = random_vector((size_t)rows * stride, 4);
  auto w = random_vector((size_t)rows * stride, 5);
  std::vector<int> pos = {0, 1, 17, 4000, 8191};
  // loss = sum(w * rope(x)); its gradient is rope_backward(w) (padding columns: w itself,
  // since they pass through untouched — but rope_backward leaves them as w too).
  auto loss = [&](const std::vector<double>& xd) {
    std::vector<float> xf(xd.begin(), xd.end());
    rope_forward(xf.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, RopeScaling{});
    double l = 0;
    for (size_t i = 0; i < xf.size(); ++i) l += (double)xf[i] * w[i];
    return l;
  };
  // The loss is linear, so a large step has no truncation error and beats float rounding.
  auto numeric = test::numeric_grad(loss, test::to_double(x), 0.25);
  auto grad = w;
  rope_backward(grad.data(), rows, n_heads, hd, stride, pos.data(), 10000.0f, RopeScaling{});
  test::expect_close(grad, numeric, grad.size(), 2e-5, 1e-4, "d rope");
}

TEST(Rope, RejectsBadArguments) {
  std::vector<float> x(16);
  std::vector<int> pos = {-1};
  EXPECT_THROW(rope_forward(x.data(), 1, 1, 16, 16, pos.data(), 10000.0f, RopeScaling{}), Error);
  pos[0] = 0;
  EXPECT_THROW(rope_forward(x.data(), 1, 1, 15, 16, pos.data(), 10000.0f, RopeScaling{}), Error);
  EXPECT_THROW(rope_forward(x.data(), 1, 2, 16, 16, pos.data(), 10000.0f, RopeScaling{}), Error);
  RopeTable table(16, 10000.0f, RopeScaling{}, 4);
  pos[0] = 4;
  EXPECT_THROW(rope_forward(table, x.data(), 1, 1, 16, pos.data()), Error);
}

}  // namespace
}  // namespace chainlm
