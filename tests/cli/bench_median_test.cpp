// The medians the benchmarks report (bench serve --rounds, bench train, bench decode): of an
// even count the mean of the middle two; the upper middle value made two rounds' median their
// maximum (a user trial: 4 rounds of 2536.6, 2624.2, 3814.0, 7194.0 tokens/s gave 3814.0).
#include <gtest/gtest.h>

#include "cli/bench_util.h"

namespace chainlm::cli {
namespace {

TEST(BenchMedian, EvenCountsTakeTheMeanOfTheMiddleTwo) {
  EXPECT_DOUBLE_EQ(median({7194.0, 2536.6, 3814.0, 2624.2}), 0.5 * (2624.2 + 3814.0));
  EXPECT_DOUBLE_EQ(median({1.0, 9.0}), 5.0);
  EXPECT_DOUBLE_EQ(median({3.0, 1.0, 2.0}), 2.0);
  EXPECT_DOUBLE_EQ(median({4.0}), 4.0);
  EXPECT_DOUBLE_EQ(median({}), 0.0);
}

}  // namespace
}  // namespace chainlm::cli
