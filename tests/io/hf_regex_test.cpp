// HfRegex (io/hf_regex.h): tokenizer.json patterns run with PCRE2 but must match as Oniguruma
// (tokenizers' engine) matches them. The classes where the two engines differ, against the
// Unicode Character Database's answers written out here: White_Space (UAX #44, PropList.txt),
// General_Category M and Pc (UnicodeData.txt).
#include "io/hf_regex.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace chainlm {
namespace {

std::vector<std::string> matches(const std::string& pattern, const std::string& text) {
  std::vector<std::string> out;
  for (const auto& [s, e] : HfRegex(pattern, "test").find_all(text))
    out.push_back(text.substr(s, e - s));
  return out;
}

using Strings = std::vector<std::string>;

TEST(HfRegex, SpaceIsWhiteSpaceWithoutTheMongolianVowelSeparator) {
  // U+180E left White_Space in Unicode 6.3; PCRE2's \s keeps it.
  EXPECT_EQ(matches("\\s", "a\u180eb"), Strings{});
  EXPECT_EQ(matches("\\S+", "a\u180eb"), Strings{"a\u180eb"});
  EXPECT_EQ(matches("[^\\s]+", "a\u180eb c"), (Strings{"a\u180eb", "c"}));
  // Every White_Space character is one.
  const std::string spaces =
      "\t\n\v\f\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
      "\u200a\u2028\u2029\u202f\u205f\u3000";
  EXPECT_EQ(matches("\\s+", "x" + spaces + "y"), Strings{spaces});
  // The zero-width space is not (General_Category Cf).
  EXPECT_EQ(matches("\\s", "a\u200bb"), Strings{});
}

TEST(HfRegex, WordHasMarksNumbersAndConnectors) {
  // Devanagari's vowel signs (Mc, Mn) and the virama: PCRE2's \w (letters, numbers, "_") split
  // the word at each.
  const std::string namaste = "\u0928\u092e\u0938\u094d\u0924\u0947";
  EXPECT_EQ(matches("\\w+", namaste + " x"), (Strings{namaste, "x"}));
  EXPECT_EQ(matches("[\\w]+", "e\u0301\u203fx\u00b2"),
            Strings{"e\u0301\u203fx\u00b2"});  // Mn, Pc, No
  EXPECT_EQ(matches("\\W+", namaste + ", x"), Strings{", "});
}

TEST(HfRegex, HIsAHexDigitAndEscapesElseStayAsTheyAre) {
  EXPECT_EQ(matches("\\h+", "x 0aF9g"), Strings{"0aF9"});
  EXPECT_EQ(matches("[\\h]+", "\t0f"), Strings{"0f"});
  // \Q..\E is literal, "\\s" an escaped backslash then "s", "[]s]" a class holding ']' and 's'.
  EXPECT_EQ(matches("\\Q\\s\\E", "a\\sb"), Strings{"\\s"});
  EXPECT_EQ(matches("\\\\s", "a\\sb"), Strings{"\\s"});
  EXPECT_EQ(matches("[]s]+", "a]sb"), Strings{"]s"});
  EXPECT_EQ(matches("[[:digit:]\\s]+", "a1 2b"), Strings{"1 2"});
  EXPECT_THROW(HfRegex("(\\s", "test"), Error);
}

// BLOOM's split pattern nests a class in a class, a union to Oniguruma (PCRE2 ended the outer
// class at the inner one's ']' and refused the pattern).
TEST(HfRegex, AClassInsideAClassIsTheirUnion) {
  const std::string bloom = " ?[^(\\s|[.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c])]+";
  // '(' and '|' are members of the class, so " (" leaves the space alone and unmatched.
  EXPECT_EQ(matches(bloom, "Hello, world! (x|y)"), (Strings{"Hello", " world", "x", "y"}));
  EXPECT_EQ(matches("[a[]b]]+", "x]ab]y"), Strings{"]ab]"});  // the nested "[]b]" holds ']' and 'b'
  EXPECT_EQ(matches("[[xy]z]+", "axyzb"), Strings{"xyz"});
  // What PCRE2 would read as literal characters is refused, naming where and the pattern.
  for (const char* pattern : {"[a[^b]]", "[a-z&&[^aeiou]]"}) {
    try {
      HfRegex r(pattern, "tok.json: pre_tokenizer");
      ADD_FAILURE() << pattern << " compiled";
    } catch (const Error& e) {
      EXPECT_NE(
          std::string(e.what()).find(std::string("tok.json: pre_tokenizer: the regex '") + pattern),
          std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace chainlm
