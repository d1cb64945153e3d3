// core/printable.h: control bytes of text from files and requests escaped, the rest as it is.
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
