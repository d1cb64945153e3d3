#include "cli/logit_difference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace chainlm::cli {
namespace {

// The read-back checks of export, quantize and expand passed models whose logits were NaN:
// std::max(d, NaN) is d, so NaN read as "max |logit difference| 0".
TEST(MaxAbsDifference, NotFiniteIsNeverNoDifference) {
  const std::vector<float> a = {1.0f, -2.0f, 3.5f}, b = {1.0f, -2.5f, 3.0f};
  EXPECT_DOUBLE_EQ(max_abs_difference(a.data(), b.data(), a.size()), 0.5);
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> c = b;
    c[0] = bad;  // first, so a later finite element cannot hide it either
    EXPECT_TRUE(std::isinf(max_abs_difference(a.data(), c.data(), a.size()))) << bad;
    EXPECT_TRUE(std::isinf(max_abs_difference(c.data(), a.data(), a.size()))) << bad;
    EXPECT_TRUE(std::isinf(max_abs_difference(c.data(), c.data(), a.size()))) << bad;
  }
}

}  // namespace
}  // namespace chainlm::cli
