#include "io/text_documents.h"

#include <gtest/gtest.h>

namespace chainlm {
namespace {

using Docs = std::vector<std::string>;

TEST(SplitDocuments, BlankLinesSeparate) {
  EXPECT_EQ(split_documents("a\nb\n\nc\n"), (Docs{"a\nb", "c"}));
  EXPECT_EQ(split_documents("\n\n\na\n\n\n\nb"), (Docs{"a", "b"}));
  EXPECT_EQ(split_documents("a\n   \t\nb\n"), (Docs{"a", "b"}));  // whitespace-only is blank
}

TEST(SplitDocuments, FortunePercentLines) {
  EXPECT_EQ(split_documents("first\n  fortune\n%\nsecond\n%\n"),
            (Docs{"first\n  fortune", "second"}));
  EXPECT_EQ(split_documents("%\n%\nx\n%\n\n%\ny"), (Docs{"x", "y"}));
  EXPECT_EQ(split_documents("100%\nsure"), (Docs{"100%\nsure"}));  // % inside a line is text
}

TEST(SplitDocuments, CrlfAndEmpty) {
  EXPECT_EQ(split_documents("a\r\nb\r\n\r\nc\r\n"), (Docs{"a\nb", "c"}));
  EXPECT_TRUE(split_documents("").empty());
  EXPECT_TRUE(split_documents("\n \n%\n").empty());
}

}  // namespace
}  // namespace chainlm
