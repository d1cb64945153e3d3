#pragma once
// The regular expressions of Hugging Face tokenizer.json files (split patterns such as GPT-2's
// and LLaMA-3's, with Unicode classes like \p{L}), compiled with PCRE2 in UTF + UCP mode.
// tokenizers compiles them with Oniguruma; the constructs these files use (\p{..}, \s, (?i:..),
// (?!..), {m,n}) mean the same in both once \s, \w and \h are Oniguruma's
// (with_oniguruma_classes), which the vectors of tests/io/hf_tokenizer_test.cpp check. Input
// must be valid UTF-8 (the tokenizer replaces invalid bytes first).
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chainlm {

// The pattern with Oniguruma's \s, \S, \w, \W, \h and \H spelled as PCRE2 properties (outside
// \Q..\E); HfRegex compiles every pattern through it.
std::string with_oniguruma_classes(const std::string& pattern);

class HfRegex {
 public:
  // Throws chainlm::Error naming `where` and PCRE2's message when the pattern does not compile.
  HfRegex(const std::string& pattern, const std::string& where);
  ~HfRegex();
  HfRegex(const HfRegex&) = delete;
  HfRegex& operator=(const HfRegex&) = delete;

  // Every match in text, left to right, as byte ranges [start, end). Iterates as tokenizers'
  // Oniguruma iterator does: the next search starts where the last match ended, and an empty
  // match right where the previous one ended is skipped by advancing one character.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  // Whether the pattern matches at the start of text (an anchored match).
  bool matches_at_start(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string pattern_;
};

// Unicode White_Space (Rust's char::is_whitespace: what tokenizers strips and splits on), one
// character per match.
const HfRegex& unicode_whitespace();

// Byte length of the UTF-8 character starting with lead byte c (1 for bytes that start none).
inline size_t utf8_char_length(unsigned char c) {
  return c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
}

}  // namespace chainlm
