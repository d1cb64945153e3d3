// --chain-schedule's parser and its meaning (infer/chain_schedule.h): segments K:COUNT, the last
// one's count optional and the last sub-model kept past the listed counts; spaces around numbers
// allowed, an empty segment (a trailing comma) refused, as in the other number lists.
#include "infer/chain_schedule.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace chainlm {
namespace {

std::vector<int> first_chains(const ChainSchedule& s, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(s.chains_for(i));
  return out;
}

TEST(ChainSchedule, SegmentsRunInOrderAndTheLastOneGoesOn) {
  EXPECT_EQ(first_chains(ChainSchedule::parse("1:3,2:3", 4), 8),
            (std::vector<int>{1, 1, 1, 2, 2, 2, 2, 2}));
  EXPECT_EQ(first_chains(ChainSchedule::parse("2:1,4", 4), 4), (std::vector<int>{2, 4, 4, 4}));
  EXPECT_EQ(first_chains(ChainSchedule::parse(" 1:2 , 3 ", 4), 4), (std::vector<int>{1, 1, 3, 3}));
}

TEST(ChainSchedule, MalformedSchedulesAreRefusedNamingWhatIsWrong) {
  struct Case {
    std::string text, message;
  };
  for (const Case& c :
       std::vector<Case>{{"1:3,", "ends with a comma"},
                         {"1:3, ", "ends with a comma"},
                         {"1:3,,2", "'' is not of the form K or K:COUNT"},
                         {"", "chain schedule is empty"},
                         {"1,2", "only the last segment may omit its token count"},
                         {"5", "asks for 5 chains; the model has 1..4"},
                         {"1:0", "needs a positive token count"},
                         {"1:x", "'1:x' is not of the form K or K:COUNT"},
                         // A count past an int is too large, not malformed.
                         {"1:99999999999,2", "'1:99999999999': 99999999999 is too large"}}) {
    try {
      ChainSchedule::parse(c.text, 4);
      ADD_FAILURE() << "'" << c.text << "' was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
          << c.text << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace chainlm
