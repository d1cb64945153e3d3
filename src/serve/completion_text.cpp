#include "serve/completion_text.h"

#include <algorithm>

namespace chainlm {

namespace {

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

// Length of the UTF-8 sequence a lead byte starts (1 for ASCII and for bytes that start none).
size_t sequence_length(unsigned char b) {
  if (b >= 0xF0 && b <= 0xF4) return 4;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  return 1;
}

// Longest proper suffix of s that is a prefix of some stop sequence.
size_t stop_prefix_tail(const std::string& s, const std::vector<std::string>& stop) {
  size_t best = 0;
  for (const std::string& q : stop)
    for (size_t n = std::min(s.size(), q.size() - 1); n > best; --n)
      if (s.compare(s.size() - n, n, q, 0, n) == 0) {
        best = n;
        break;
      }
  return best;
}

}  // namespace

size_t incomplete_utf8_tail(const std::string& s) {
  // A character is at most 4 bytes: its lead byte is among the last 3 if it is incomplete.
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const unsigned char b = (unsigned char)s[s.size() - back];
    if (is_continuation(b)) continue;
    return sequence_length(b) > back ? back : 0;
  }
  return 0;
}

std::string CompletionText::release(size_t n) {
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  text_ += out;
  return out;
}

std::string CompletionText::push(const std::string& piece) {
  if (stopped_) return {};
  pending_ += piece;
  // Everything released so far holds no stop sequence and ends where none can begin, so the
  // first match, if any, lies inside pending_.
  size_t cut = std::string::npos;
  for (const std::string& q : stop_) cut = std::min(cut, pending_.find(q));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = release(cut);
    pending_.clear();
    return out;
  }
  const size_t hold = std::max(stop_prefix_tail(pending_, stop_), incomplete_utf8_tail(pending_));
  return release(pending_.size() - hold);
}

std::string CompletionText::finish() {
  if (stopped_) return {};
  return release(pending_.size());
}

std::string json_dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace chainlm
