#include "serve/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "io/text_encoding.h"

namespace chainlm {

TokenLogprob token_logprob(const float* logits, int V, int texts, int id, int n_top,
                           const std::function<std::string(int)>& text_of) {
  // log-softmax in double: log p_i = l_i - (max + log sum exp(l - max)).
  const double mx = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += std::exp((double)logits[i] - mx);
  const double lse = mx + std::log(sum);
  TokenLogprob t;
  t.text = text_of(id);
  t.logprob = logits[id] - lse;
  const int n = std::min(n_top, texts);
  if (n > 0) {
    std::vector<int> order(texts);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (int k = 0; k < n; ++k) t.top.emplace_back(text_of(order[k]), logits[order[k]] - lse);
  }
  return t;
}

namespace {

nlohmann::json bytes_of(const std::string& s) {
  nlohmann::json b = nlohmann::json::array();
  for (unsigned char c : s) b.push_back((int)c);
  return b;
}

}  // namespace

// A token's text as a key or entry of the legacy format: itself when it is valid UTF-8, else
// "bytes:\\xNN..." as OpenAI writes such tokens (U+FFFD for each would merge distinct tokens).
std::string legacy_text(const std::string& s) {
  if (check_utf8(s).ok()) return s;
  std::string out = "bytes:";
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : s) {
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

nlohmann::json completion_logprobs_json(const std::vector<TokenLogprob>& tokens,
                                        Utf8CharCount before) {
  nlohmann::json text = nlohmann::json::array(), lp = nlohmann::json::array(), top = nlohmann::json::array(),
                 offsets = nlohmann::json::array();
  for (const TokenLogprob& t : tokens) {
    text.push_back(legacy_text(t.text));
    lp.push_back(t.logprob);
    nlohmann::json alternatives = nlohmann::json::object();
    for (const auto& [s, l] : t.top)
      if (!alternatives.contains(legacy_text(s))) alternatives[legacy_text(s)] = l;  // one text, two tokens: the likelier
    top.push_back(alternatives);
    offsets.push_back(before.count());
    before.add(t.text);
  }
  return {{"tokens", text}, {"token_logprobs", lp}, {"top_logprobs", top}, {"text_offset", offsets}};
}

nlohmann::json chat_logprobs_json(const std::vector<TokenLogprob>& tokens) {
  nlohmann::json content = nlohmann::json::array();
  for (const TokenLogprob& t : tokens) {
    nlohmann::json top = nlohmann::json::array();
    for (const auto& [s, l] : t.top) top.push_back({{"token", s}, {"logprob", l}, {"bytes", bytes_of(s)}});
    content.push_back({{"token", t.text}, {"logprob", t.logprob}, {"bytes", bytes_of(t.text)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

}  // namespace chainlm
