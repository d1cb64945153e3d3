#include "kernels/fast_exp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace chainlm {
namespace {

// One value at a time through a call the compiler keeps: the scalar code path.
__attribute__((noinline)) float scalar_exp(float x) { return fast_exp(x); }

TEST(FastExp, RelativeErrorWithinThreeUlpOfDoubleOverItsRange) {
  // Every 1/4096 of [-87, 88] plus points right around multiples of ln 2 / 2 (the reduction's
  // interval ends, where |r| is largest).
  std::vector<float> xs;
  for (int i = -87 * 4096; i <= 88 * 4096; ++i) xs.push_back((float)i / 4096.0f);
  for (int k = -250; k <= 250; ++k) {
    const float c = (float)(k * 0.34657359027997264);
    xs.push_back(std::nextafter(c, -100.0f));
    xs.push_back(c);
    xs.push_back(std::nextafter(c, 100.0f));
  }
  std::vector<float> ys(xs.size());
#pragma omp simd
  for (size_t i = 0; i < xs.size(); ++i) ys[i] = fast_exp(xs[i]);
  double worst = 0.0;
  float worst_x = 0.0f;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] < -87.0f || xs[i] > 88.0f) continue;
    const double ref = std::exp((double)xs[i]);
    const double rel = std::fabs(ys[i] - ref) / ref;
    if (rel > worst) worst = rel, worst_x = xs[i];
  }
  // A float's unit roundoff is 2^-24 ~ 6e-8: 3e-7 is about 2.5 ulp (Cephes expf's own bound
  // is ~2 ulp; float rounding of the result adds half of one).
  EXPECT_LT(worst, 3e-7) << "at x = " << worst_x;
}

TEST(FastExp, VectorLanesAndTheScalarPathGiveTheSameBits) {
  std::vector<float> xs;
  for (int i = 0; i < 1003; ++i) xs.push_back(-60.0f + 0.1173f * (float)i);
  std::vector<float> ys(xs.size());
#pragma omp simd
  for (size_t i = 0; i < xs.size(); ++i) ys[i] = fast_exp(xs[i]);
  for (size_t i = 0; i < xs.size(); ++i) {
    const float s = scalar_exp(xs[i]);
    EXPECT_EQ(std::memcmp(&s, &ys[i], sizeof s), 0) << "x = " << xs[i];
  }
}

TEST(FastExp, ClampsToNormalFloatsAndKeepsNaN) {
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  EXPECT_FLOAT_EQ(fast_exp(-1000.0f), fast_exp(-87.0f));
  EXPECT_GT(fast_exp(-1000.0f), 0.0f);
  EXPECT_TRUE(std::isnormal(fast_exp(-std::numeric_limits<float>::infinity())));
  EXPECT_FLOAT_EQ(fast_exp(1000.0f), fast_exp(88.0f));
  EXPECT_TRUE(std::isfinite(fast_exp(std::numeric_limits<float>::infinity())));
  EXPECT_NEAR(fast_exp(88.0f) / std::exp(88.0), 1.0, 3e-7);
  EXPECT_TRUE(std::isnan(fast_exp(std::numeric_limits<float>::quiet_NaN())));
  // A sigmoid through it saturates cleanly at both ends.
  EXPECT_EQ(1.0f / (1.0f + fast_exp(-200.0f)), 1.0f);
  EXPECT_LT(1.0f / (1.0f + fast_exp(200.0f)), 1e-37f);
}

}  // namespace
}  // namespace chainlm
