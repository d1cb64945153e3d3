// core/printable.h: control bytes and invalid UTF-8 of text from files and requests escaped, the
// rest as it is.
#include "core/printable.h"

#include <gtest/gtest.h>

#include <string>

namespace chainlm {
namespace {

TEST(Printable, ControlBytesAndTheGivenCharactersAreEscaped) {
  EXPECT_EQ(printable("plain text, \xc3\xa9t\xc3\xa9"), "plain text, \xc3\xa9t\xc3\xa9");
  EXPECT_EQ(printable(std::string("a\x1b[2J\0b\n\x7f", 9)), "a\\x1b[2J\\x00b\\x0a\\x7f");
  EXPECT_EQ(printable("say \"hi\"", "\""), "say \\x22hi\\x22");
  EXPECT_EQ(printable(""), "");
}

// A request path of %FF went into the access log as a raw 0xFF byte (a user trial): log
// pipelines reject or mangle lines that are not UTF-8. Every byte of an invalid sequence is
// escaped (a truncated character, a stray continuation byte, an overlong form, a surrogate);
// valid characters of 2-4 bytes beside them are kept.
TEST(Printable, BytesOfInvalidUtf8AreEscapedAndCharactersKept) {
  EXPECT_EQ(printable("/v1/models/\xff"), "/v1/models/\\xff");
  EXPECT_EQ(printable("a\xe2\x82z"), "a\\xe2\\x82z");       // a 3-byte character cut short
  EXPECT_EQ(printable("\x80\xc3\xa9"), "\\x80\xc3\xa9");    // stray continuation, then é
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(printable("\xe2\x82\xac \xf0\x9f\x98\x80"),
            "\xe2\x82\xac \xf0\x9f\x98\x80");  // € and an emoji
}

// What chainlm suggests to run ("Continue with: chainlm train --out X --resume") pasted into a
// shell: a run called "with space-run" or "q'uote" was printed bare (a user trial).
TEST(ShellWord, QuotesWhatAShellWouldSplitOrRead) {
  EXPECT_EQ(shell_word("runs/exp-1.2"), "runs/exp-1.2");
  EXPECT_EQ(shell_word("with space-run"), "'with space-run'");
  EXPECT_EQ(shell_word("q'uo\"te"), "'q'\\''uo\"te'");
  EXPECT_EQ(shell_word("$HOME/*"), "'$HOME/*'");
  EXPECT_EQ(shell_word("a\nb"), "'a\nb'");
  EXPECT_EQ(shell_word(""), "''");
}

}  // namespace
}  // namespace chainlm
