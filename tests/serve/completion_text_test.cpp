// CompletionText: stop sequences, UTF-8 characters never split across streamed pieces, and a
// streamed completion reading exactly as the whole one.
#include "serve/completion_text.h"

#include <gtest/gtest.h>

#include <random>

namespace chainlm {
namespace {

using nlohmann::json;

// What a client reads from a JSON string that json_dump wrote.
std::string as_client_reads(const std::string& bytes) {
  return json::parse(json_dump(json(bytes))).get<std::string>();
}

TEST(CompletionText, WithoutStopReleasesEverythingButSplitCharacters) {
  CompletionText t;
  EXPECT_EQ(t.push("ab"), "ab");
  EXPECT_EQ(t.push("c\xE2\x82"), "c");  // "€" = E2 82 AC, incomplete
  EXPECT_EQ(t.push("\xAC!"), "\xE2\x82\xAC!");
  EXPECT_EQ(t.push("\xF0"), "");
  EXPECT_EQ(t.finish(), "\xF0");  // an incomplete character at the end is released as it is
  EXPECT_EQ(t.text(), "abc\xE2\x82\xAC!\xF0");
  EXPECT_FALSE(t.stopped());
}

TEST(CompletionText, IncompleteTail) {
  EXPECT_EQ(incomplete_utf8_tail(""), 0u);
  EXPECT_EQ(incomplete_utf8_tail("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xC3"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("a\xC3\xA9"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98\x80"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\x80\x80"), 0u);  // stray continuation bytes start nothing
  EXPECT_EQ(incomplete_utf8_tail("a\xFF"), 0u);     // nor does an invalid lead byte
}

TEST(CompletionText, StopsBeforeTheStopSequenceAcrossPieces) {
  CompletionText t({"END", "\n\n"});
  EXPECT_EQ(t.push("hello E"), "hello ");  // "E" may start "END": held back
  EXPECT_EQ(t.push("N"), "");
  EXPECT_EQ(t.push("x"), "ENx");  // it did not
  EXPECT_EQ(t.push(" wor\n"), " wor");
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(t.push("\nmore"), "");
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.push("ignored"), "");
  EXPECT_EQ(t.finish(), "");
  EXPECT_EQ(t.text(), "hello ENx wor");
}

TEST(CompletionText, StopInsideOnePieceAndTheEarliestOfSeveral) {
  CompletionText t({"c", "ab"});
  EXPECT_EQ(t.push("xxabc"), "xx");
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.text(), "xx");
  CompletionText u({"lo"});
  EXPECT_EQ(u.push("hel"), "he");
  EXPECT_EQ(u.finish(), "l");  // generation ended: a held-back prefix is plain text
}

// Random bytes (valid and broken UTF-8) in random pieces, with and without stop sequences:
// replacing invalid UTF-8 piece by piece reads the same as in the whole text.
TEST(CompletionText, StreamedPiecesReadAsTheWholeText) {
  std::mt19937 rng(5);
  const std::vector<std::string> alphabet = {
      "a",    " ",    "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xC3", "\xE2\x82", "\x80",
      "\xBF", "\xFF", "\xE0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "zz"};
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes;
    const int parts = 1 + (int)(rng() % 12);
    for (int i = 0; i < parts; ++i) bytes += alphabet[rng() % alphabet.size()];
    std::vector<std::string> stop;
    if (trial % 2) stop = {"\xC3\xA9 ", "zz"};
    CompletionText t(stop);
    std::string streamed;
    for (size_t pos = 0; pos < bytes.size();) {
      const size_t n = std::min(bytes.size() - pos, (size_t)(1 + rng() % 4));
      streamed += as_client_reads(t.push(bytes.substr(pos, n)));
      pos += n;
    }
    streamed += as_client_reads(t.finish());
    EXPECT_EQ(streamed, as_client_reads(t.text()))
        << json(bytes).dump(-1, ' ', true, json::error_handler_t::replace);
    if (stop.empty()) {
      EXPECT_EQ(t.text(), bytes);
    }
  }
}

}  // namespace
}  // namespace chainlm
