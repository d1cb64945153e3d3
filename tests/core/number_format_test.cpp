// Numbers as tables and messages print them (core/number_format.h).
#include "core/number_format.h"

#include <gtest/gtest.h>

#include <cmath>

namespace chainlm {
namespace {

TEST(NumberFormat, ThousandsShortCountsAndFixed) {
  EXPECT_EQ(thousands(1234567), "1,234,567");
  EXPECT_EQ(thousands(-1234), "-1,234");
  EXPECT_EQ(short_count(1234567), "1.23M");
  EXPECT_EQ(short_count(45600), "45.6K");
  EXPECT_EQ(fixed(1.23456, 2), "1.23");
  EXPECT_EQ(fixed(NAN, 2), "—");
}

// "1 chains", "1 KV heads" and "1 validations" were printed.
TEST(NumberFormat, CountsTakeTheSingularForOne) {
  EXPECT_EQ(count_of(1, "chain"), "1 chain");
  EXPECT_EQ(count_of(0, "chain"), "0 chains");
  EXPECT_EQ(count_of(4, "KV head"), "4 KV heads");
}

}  // namespace
}  // namespace chainlm
