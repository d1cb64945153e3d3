#pragma once
// The text a completion returns, built token by token: it ends before the first stop sequence,
// and when streamed it is released in pieces that never split a UTF-8 character nor release
// the start of what may become a stop sequence.
//
// Pieces are cut only before a byte that does not continue a UTF-8 sequence (an ASCII byte or a
// lead byte), so replacing invalid UTF-8 piece by piece (json_dump) gives the same text as
// replacing it in the whole: a streamed completion reads the same as the non-streamed one.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace chainlm {

class CompletionText {
 public:
  explicit CompletionText(std::vector<std::string> stop = {}) : stop_(std::move(stop)) {}

  // Adds one token's bytes; returns the bytes that are now safe to release (possibly none).
  std::string push(const std::string& piece);
  // Releases whatever is held back (generation has ended).
  std::string finish();

  bool stopped() const { return stopped_; }          // a stop sequence appeared
  const std::string& text() const { return text_; }  // everything released so far

 private:
  std::string release(size_t n);

  std::vector<std::string> stop_;
  std::string pending_, text_;
  bool stopped_ = false;
};

// Bytes at the end of s that start a UTF-8 character still missing continuation bytes.
size_t incomplete_utf8_tail(const std::string& s);

// JSON text of j; invalid UTF-8 in its strings becomes U+FFFD (as `chainlm generate --json`).
std::string json_dump(const nlohmann::json& j);

}  // namespace chainlm
