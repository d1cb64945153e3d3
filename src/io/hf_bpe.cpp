#include "io/hf_bpe.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/error.h"
#include "io/hf_regex.h"

namespace chainlm {

namespace {

std::string optional_string(const nlohmann::json& model, const char* key, const std::string& where) {
  if (!model.contains(key) || model[key].is_null()) return "";
  CHAINLM_CHECK(model[key].is_string(), where, ": model.", key, " must be a string or null");
  return model[key].get<std::string>();
}

bool optional_bool(const nlohmann::json& model, const char* key, const std::string& where) {
  if (!model.contains(key) || model[key].is_null()) return false;
  CHAINLM_CHECK(model[key].is_boolean(), where, ": model.", key, " must be true or false");
  return model[key].get<bool>();
}

}  // namespace

HfBpe::HfBpe(const nlohmann::json& model, const std::string& where) {
  CHAINLM_CHECK(model.contains("vocab") && model["vocab"].is_object(), where,
                ": model.vocab is missing or not an object of token -> id");
  // A LLaMA-3 tokenizer has 128K tokens and 280K merges: the loops below avoid a string of
  // their own per entry (building this table took ~0.4 s of a 128K-token file's ~1 s load).
  const nlohmann::json::object_t& vocab =
      *model["vocab"].get_ptr<const nlohmann::json::object_t*>();
  vocab_.reserve(vocab.size());
  for (const auto& [token, id] : vocab) {
    CHAINLM_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (int64_t(1) << 30), where,
                  ": model.vocab['", token, "'] is not a non-negative id");
    vocab_.emplace(token, id.get<int>());
  }
  CHAINLM_CHECK(model.contains("merges") && model["merges"].is_array(), where,
                ": model.merges is missing or not an array (a BPE model needs its merges)");
  const nlohmann::json& merges = model["merges"];
  merges_.reserve(merges.size());
  // With a continuing_subword_prefix ("##"), a merge's second token carries it and the result
  // does not: tokenizers makes a + b[prefix length..] (the file was refused, "t##h" not found).
  prefix_ = optional_string(model, "continuing_subword_prefix", where);
  std::string made;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const nlohmann::json& m = merges[rank];
    std::string_view a, b;
    if (m.is_string()) {  // "a b", the format before tokenizers 0.20
      const std::string_view s = *m.get_ptr<const std::string*>();
      const size_t space = s.find(' ');
      CHAINLM_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos, where,
                    ": merge ", rank, " '", s, "' is not two tokens separated by one space");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else {
      CHAINLM_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), where, ": merge ",
                    rank, " is neither \"a b\" nor [\"a\", \"b\"]");
      a = *m[0].get_ptr<const std::string*>();
      b = *m[1].get_ptr<const std::string*>();
    }
    CHAINLM_CHECK(b.size() >= prefix_.size() &&
                      (b.size() == prefix_.size() || (b[prefix_.size()] & 0xC0) != 0x80),
                  where, ": merge ", rank, " (", a, " ", b,
                  ") cannot drop the continuing_subword_prefix '", prefix_,
                  "' from its second token");
    made.assign(a).append(b.substr(prefix_.size()));
    const int ia = id_of(a), ib = id_of(b), merged = id_of(made);
    CHAINLM_CHECK(ia >= 0 && ib >= 0, where, ": merge ", rank, " (", a, " ", b, ") names a token not in the vocab");
    CHAINLM_CHECK(merged >= 0, where, ": merge ", rank, " makes '", made,
                  "', which is not in the vocab");
    merges_[pair_key(ia, ib)] = Merge{int(rank), merged};  // a repeated pair: the last rank wins, as there
  }
  const std::string unk = optional_string(model, "unk_token", where);
  if (!unk.empty()) {
    unk_id_ = id_of(unk);
    CHAINLM_CHECK(unk_id_ >= 0, where, ": model.unk_token '", unk, "' is not in the vocab");
  }
  fuse_unk_ = optional_bool(model, "fuse_unk", where);
  byte_fallback_ = optional_bool(model, "byte_fallback", where);
  ignore_merges_ = optional_bool(model, "ignore_merges", where);
  suffix_ = optional_string(model, "end_of_word_suffix", where);
  // "dropout" randomizes merges while training a model; encoding here is always deterministic.
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_ids_[b] = id_of(name);
  }
}

int HfBpe::id_of(std::string_view s) const {
  const auto it = vocab_.find(s);
  return it == vocab_.end() ? -1 : it->second;
}

void HfBpe::tokenize(std::string_view piece, std::vector<int>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    const int whole = id_of(piece);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  // Characters to symbols, as tokenizers' merge_word: an unknown character becomes its bytes'
  // <0xXX> tokens (byte_fallback, when all exist) or the unk token (runs fused with fuse_unk);
  // a pending unk is flushed only by the next known character, as there.
  std::vector<int> symbols;
  int pending_unk = 0;  // how many unk symbols wait to be added (1 when fused)
  for (size_t i = 0; i < piece.size();) {
    const size_t len = std::min(utf8_char_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    std::string s(piece.substr(i, len));
    if (i > 0 && !prefix_.empty()) s = prefix_ + s;
    i += len;
    if (i == piece.size() && !suffix_.empty()) s += suffix_;
    const int id = id_of(s);
    if (id >= 0) {
      symbols.insert(symbols.end(), pending_unk, unk_id_);
      pending_unk = 0;
      symbols.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        for (unsigned char c : s) symbols.push_back(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_ >= 0) pending_unk = fuse_unk_ ? 1 : pending_unk + 1;
    // Without an unk token the character is dropped, as tokenizers does.
  }
  symbols.insert(symbols.end(), pending_unk, unk_id_);
  merge_word(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void HfBpe::merge_word(std::vector<int>& symbols) const {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  std::vector<int> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int rank, pos, id;
    bool operator<(const Candidate& o) const {  // priority_queue pops the largest: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    const auto it = merges_.find(pair_key(symbols[pos], symbols[next[pos]]));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    const int right = next[top.pos];
    const auto it = merges_.find(pair_key(symbols[top.pos], symbols[right]));
    if (it == merges_.end() || it->second.id != top.id) continue;  // the pair changed since
    symbols[top.pos] = top.id;
    alive[right] = 0;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    push(prev[top.pos]);
    push(top.pos);
  }
  int w = 0;
  for (int i = 0; i < n; ++i)
    if (alive[i]) symbols[w++] = symbols[i];
  symbols.resize(w);
}

}  // namespace chainlm
