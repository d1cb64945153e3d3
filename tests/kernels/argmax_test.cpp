#include "kernels/argmax.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

namespace chainlm {
namespace {

// llama2.c's argmax (the first index whose value no earlier one reaches, NaNs never chosen
// unless the first value is one), whatever the length (vector blocks and their tails), with
// ties, both zeros, infinities and NaNs placed anywhere.
TEST(FirstArgmax, IsLlama2cArgmax) {
  auto reference = [](const std::vector<float>& x) {
    int best = 0;
    for (int i = 1; i < (int)x.size(); ++i)
      if (x[i] > x[best]) best = i;
    return best;
  };
  std::mt19937 rng(3);
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  const float specials[] = {nan, inf, -inf, 0.0f, -0.0f, 5.0f};
  int checked = 0;
  for (int n : {1, 2, 7, 15, 16, 17, 31, 32, 33, 47, 64, 100, 4096}) {
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<float> x(n);
      // Few distinct values, so that the maximum often repeats.
      for (float& v : x) v = (float)(rng() % 7) - 3.0f;
      const int planted = (int)(rng() % 4);
      for (int p = 0; p < planted; ++p) x[rng() % n] = specials[rng() % 6];
      if (trial % 10 == 0) std::fill(x.begin(), x.end(), trial % 20 == 0 ? -0.0f : -inf);
      if (trial % 10 == 5) x[rng() % n] = nan;
      ASSERT_EQ(first_argmax(x.data(), n), reference(x)) << "n " << n << ", trial " << trial;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 13 * 200);
}

// A NaN later in the same vector lane as the only maximum (8, 16 or 32 values on, for every
// register width) must not replace the running maximum of that lane.
TEST(FirstArgmax, ANanAfterTheMaximumDoesNotHideIt) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int n : {40, 100, 4096})
    for (int p = 0; p < 64 && p < n; ++p) {
      std::vector<float> x(n, -1.0f);
      x[p] = 2.0f;
      for (int d : {8, 16, 32})
        if (p + d < n) x[p + d] = nan;
      ASSERT_EQ(first_argmax(x.data(), n), p) << "n " << n << ", maximum at " << p;
    }
}

}  // namespace
}  // namespace chainlm
