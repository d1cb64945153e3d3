#include "kernels/chain_linear.h"

#include <gtest/gtest.h>

#include "gradcheck.h"

namespace chainlm {
namespace {

using test::expect_close;
using test::numeric_grad;
using test::random_vector;

// Naive Chain-of-Linear as one dense block-lower-triangular matrix, in double.
std::vector<double> dense_reference(const ChainLinear& cl, int k, int M, const std::vector<double>& x,
                                    const std::vector<std::vector<double>>& w) {
  const int din = cl.in.total(), dout = cl.out.total();
  std::vector<double> y((size_t)M * dout, 0.0);
  for (int r = 0; r < M; ++r)
    for (int i = 0; i < k; ++i)
      for (int o = 0; o < cl.out.width(i); ++o) {
        double s = 0;
        for (int j = 0; j < cl.in.end(i); ++j) s += w[i][(size_t)o * cl.in.end(i) + j] * x[(size_t)r * din + j];
        y[(size_t)r * dout + cl.out.begin(i) + o] = s;
      }
  return y;
}

struct Case {
  std::vector<int> chains;
  int din, dout, k;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "chains " << ::testing::PrintToString(c.chains) << " din " << c.din << " dout " << c.dout
      << " k " << c.k;
}

class ChainLinearTest : public ::testing::TestWithParam<Case> {};

TEST_P(ChainLinearTest, ForwardMatchesDenseReference) {
  const Case c = GetParam();
  ChainLinear cl{ChainSplit(c.din, c.chains), ChainSplit(c.dout, c.chains)};
  const int M = 5;
  auto x = random_vector((size_t)M * c.din, 1);
  std::vector<std::vector<float>> w;
  std::vector<std::vector<double>> wd;
  std::vector<const float*> wp;
  for (int i = 0; i < cl.in.n(); ++i) {
    w.push_back(random_vector((size_t)cl.out.width(i) * cl.in.end(i), 10 + i));
    wd.push_back(test::to_double(w.back()));
  }
  for (auto& v : w) wp.push_back(v.data());
  std::vector<float> y((size_t)M * c.dout, 7.0f);
  chain_linear_forward(cl, c.k, M, x.data(), c.din, wp.data(), y.data(), c.dout);
  auto ref = dense_reference(cl, c.k, M, test::to_double(x), wd);
  for (int r = 0; r < M; ++r) {
    expect_close(y.data() + (size_t)r * c.dout, ref.data() + (size_t)r * c.dout, cl.out.prefix(c.k),
                 1e-5, 1e-5, "y");
    // Columns of inactive chains are never written.
    for (int j = cl.out.prefix(c.k); j < c.dout; ++j) EXPECT_EQ(y[(size_t)r * c.dout + j], 7.0f);
  }
}

TEST_P(ChainLinearTest, BackwardMatchesFiniteDifferences) {
  const Case c = GetParam();
  ChainLinear cl{ChainSplit(c.din, c.chains), ChainSplit(c.dout, c.chains)};
  const int M = 3, n = cl.in.n();
  auto x = random_vector((size_t)M * c.din, 2);
  auto proj = random_vector((size_t)M * c.dout, 3);  // loss = sum(proj * y)
  std::vector<std::vector<float>> w;
  for (int i = 0; i < n; ++i) w.push_back(random_vector((size_t)cl.out.width(i) * cl.in.end(i), 20 + i));
  std::vector<const float*> wp;
  for (auto& v : w) wp.push_back(v.data());
  // Analytic, accumulating onto pre-filled buffers.
  std::vector<float> dx((size_t)M * c.din, 0.5f);
  std::vector<std::vector<float>> dw;
  for (int i = 0; i < n; ++i) dw.emplace_back(w[i].size(), 0.25f);
  std::vector<float*> dwp;
  for (auto& v : dw) dwp.push_back(v.data());
  std::vector<float> dy((size_t)M * c.dout, 0.0f);
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < cl.out.prefix(c.k); ++j) dy[(size_t)r * c.dout + j] = proj[(size_t)r * c.dout + j];
  chain_linear_backward(cl, c.k, M, x.data(), c.din, wp.data(), dy.data(), c.dout, dx.data(), c.din,
                        dwp.data());
  auto loss_of = [&](const std::vector<double>& xs, const std::vector<std::vector<double>>& ws) {
    auto y = dense_reference(cl, c.k, M, xs, ws);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * proj[i];
    return s;
  };
  std::vector<std::vector<double>> wd;
  for (auto& v : w) wd.push_back(test::to_double(v));
  auto gx = numeric_grad([&](const std::vector<double>& xs) { return loss_of(xs, wd); },
                         test::to_double(x));
  for (auto& g : gx) g += 0.5;
  expect_close(dx, gx, gx.size(), 1e-4, 1e-4, "dx");
  for (int i = 0; i < n; ++i) {
    auto gw = numeric_grad(
        [&](const std::vector<double>& wi) {
          auto ws = wd;
          ws[i] = wi;
          return loss_of(test::to_double(x), ws);
        },
        wd[i]);
    for (auto& g : gw) g += 0.25;
    // Inactive chains' blocks get no gradient: the numeric gradient is 0 there too.
    expect_close(dw[i], gw, gw.size(), 1e-4, 1e-4, "dw");
  }
}

TEST_P(ChainLinearTest, OverwriteModeIgnoresPreviousDx) {
  const Case c = GetParam();
  ChainLinear cl{ChainSplit(c.din, c.chains), ChainSplit(c.dout, c.chains)};
  const int M = 4, n = cl.in.n();
  auto x = random_vector((size_t)M * c.din, 4);
  auto dy = random_vector((size_t)M * c.dout, 5);
  std::vector<std::vector<float>> w;
  for (int i = 0; i < n; ++i) w.push_back(random_vector((size_t)cl.out.width(i) * cl.in.end(i), 30 + i));
  std::vector<const float*> wp;
  for (auto& v : w) wp.push_back(v.data());
  std::vector<float> dx_zero((size_t)M * c.din, 0.0f), dx_junk((size_t)M * c.din, 123.0f);
  chain_linear_backward(cl, c.k, M, x.data(), c.din, wp.data(), dy.data(), c.dout, dx_zero.data(),
                        c.din, nullptr, false);
  chain_linear_backward(cl, c.k, M, x.data(), c.din, wp.data(), dy.data(), c.dout, dx_junk.data(),
                        c.din, nullptr, true);
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < cl.in.prefix(c.k); ++j)
      EXPECT_FLOAT_EQ(dx_junk[(size_t)r * c.din + j], dx_zero[(size_t)r * c.din + j]);
}

// Chain tuning: with the first f chains frozen, the trainable blocks' weight gradients and the
// trainable chains' input gradients equal the full backward's; nothing else is touched.
TEST_P(ChainLinearTest, FrozenLeadingChainsAreSkipped) {
  const Case c = GetParam();
  ChainLinear cl{ChainSplit(c.din, c.chains), ChainSplit(c.dout, c.chains)};
  const int M = 4, n = cl.in.n();
  auto x = random_vector((size_t)M * c.din, 6);
  auto dy = random_vector((size_t)M * c.dout, 7);
  std::vector<std::vector<float>> w;
  for (int i = 0; i < n; ++i) w.push_back(random_vector((size_t)cl.out.width(i) * cl.in.end(i), 40 + i));
  std::vector<const float*> wp;
  for (auto& v : w) wp.push_back(v.data());
  for (int f = 1; f < c.k; ++f) {
    for (bool overwrite : {false, true}) {
      std::vector<float> dx_full((size_t)M * c.din, 0.5f), dx((size_t)M * c.din, 0.5f);
      std::vector<std::vector<float>> dw_full, dw;
      std::vector<float*> dwp_full, dwp;
      for (int i = 0; i < n; ++i) {
        dw_full.emplace_back(w[i].size(), 0.25f);
        dw.emplace_back(w[i].size(), 0.25f);
      }
      for (int i = 0; i < n; ++i) {
        dwp_full.push_back(dw_full[i].data());
        dwp.push_back(i < f ? nullptr : dw[i].data());
      }
      chain_linear_backward(cl, c.k, M, x.data(), c.din, wp.data(), dy.data(), c.dout,
                            dx_full.data(), c.din, dwp_full.data(), overwrite);
      chain_linear_backward(cl, c.k, M, x.data(), c.din, wp.data(), dy.data(), c.dout, dx.data(),
                            c.din, dwp.data(), overwrite, f);
      for (int r = 0; r < M; ++r)
        for (int j = 0; j < c.din; ++j) {
          const size_t e = (size_t)r * c.din + j;
          if (j < cl.in.prefix(f))
            EXPECT_EQ(dx[e], 0.5f) << "frozen dx column " << j << " was written (f=" << f << ")";
          else
            EXPECT_NEAR(dx[e], dx_full[e], 1e-5) << "f=" << f << " r=" << r << " j=" << j;
        }
      for (int i = 0; i < n; ++i)
        for (size_t e = 0; e < dw[i].size(); ++e) {
          if (i < f) EXPECT_EQ(dw[i][e], 0.25f);
          else ASSERT_NEAR(dw[i][e], dw_full[i][e], 1e-5) << "block " << i;
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ChainLinearTest,
                         ::testing::Values(Case{{1}, 6, 4, 1}, Case{{1, 1}, 8, 6, 2},
                                           Case{{1, 1}, 8, 6, 1}, Case{{1, 2, 1}, 8, 12, 3},
                                           Case{{1, 2, 1}, 8, 12, 2}, Case{{2, 1}, 9, 6, 2}));

}  // namespace
}  // namespace chainlm
