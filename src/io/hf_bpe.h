#pragma once
// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): a vocabulary,
// ranked merges, and the options today's LLaMA-family files set (byte_fallback, unk_token with
// fuse_unk, ignore_merges, continuing_subword_prefix, end_of_word_suffix). Merging follows
// tokenizers' Word::merge_all: the lowest-ranked pair first, the leftmost among equal ranks.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace chainlm {

class HfBpe {
 public:
  // `model` is tokenizer.json's "model" object; `where` names the file in errors.
  HfBpe(const nlohmann::json& model, const std::string& where);

  // The ids of one pre-tokenized piece (already byte-level mapped or "▁"-replaced).
  void tokenize(std::string_view piece, std::vector<int>& out) const;

  // Hashes std::string and string_view alike, so lookups need no temporary string.
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  using Vocab = std::unordered_map<std::string, int, TextHash, std::equal_to<>>;
  const Vocab& vocab() const { return vocab_; }
  int id_of(std::string_view s) const;  // -1 when absent

 private:
  struct PairHash {
    size_t operator()(uint64_t k) const { return std::hash<uint64_t>()(k); }
  };
  static uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  void merge_word(std::vector<int>& symbols) const;

  Vocab vocab_;
  struct Merge {
    int rank, id;
  };
  std::unordered_map<uint64_t, Merge, PairHash> merges_;
  int unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  int byte_ids_[256];            // "<0xXX>" ids for byte_fallback, -1 when absent
};

}  // namespace chainlm
