// The one reading of comma-separated option lists (core/text_list.h).
#include "core/text_list.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace chainlm {
namespace {

using Items = std::vector<std::string>;

TEST(TextList, ItemsAreTrimmedAndEmptyOnesKept) {
  EXPECT_EQ(split_list("1,0.5,2", "--x"), (Items{"1", "0.5", "2"}));
  EXPECT_EQ(split_list(" 1 ,\t0.5 , 2 ", "--x"), (Items{"1", "0.5", "2"}));
  EXPECT_EQ(split_list("1,,2", "--x"), (Items{"1", "", "2"}));
  EXPECT_EQ(split_list("", "--x"), Items{});
  EXPECT_EQ(split_list("  ", "--x"), Items{});
  EXPECT_EQ(trim_blanks(" \t1 : 3 "), "1 : 3");
}

TEST(TextList, ATrailingCommaIsRefusedNamingTheOption) {
  for (const char* s : {"1,", "1, ", "1,2,\t"}) {
    try {
      split_list(s, "--add-chains");
      ADD_FAILURE() << "'" << s << "' was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), std::string("--add-chains: '") + s + "' ends with a comma");
    }
  }
}

}  // namespace
}  // namespace chainlm
