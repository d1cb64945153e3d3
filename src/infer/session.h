#pragma once
// Incremental inference over a KV cache (SPEC A4, A8): prefill a prompt, then decode one
// token at a time with any number of active chains, switching between tokens.
#include <vector>

#include "infer/kv_cache.h"
#include "model/model.h"

namespace chainlm {

class InferenceSession {
 public:
  // max_chunk bounds the rows of one forward pass (longer inputs run in chunks).
  explicit InferenceSession(const Model& model, int max_chunk = 512);

  void reset();
  int length() const { return (int)tokens_.size(); }
  const std::vector<int>& tokens() const { return tokens_; }
  const KVCache& cache() const { return cache_; }

  // Runs tokens at positions [length(), length()+n) through sub-model k, extending the
  // cache. Returns the logits (V floats) of the last row; with all_logits, also writes the
  // logits of every row (n, V) there. For plain CoLM, chains the cache lacks for earlier
  // positions (left behind by a smaller sub-model) are computed first.
  const float* append(const int* tokens, int n, int k, float* all_logits = nullptr);

  // Prefills a prompt for decoding with k chains and returns the next-token logits. With
  // CoLM-Air and chain1_prefill, all but the last token run through chain 1 alone: the
  // whole KV cache depends on chain 1 only, and only the last token needs k chains.
  const float* prefill(const std::vector<int>& prompt, int k, bool chain1_prefill = true);

  // Appends one token with k chains; returns its next-token logits.
  const float* decode(int token, int k) { return append(&token, 1, k); }

  // Positions whose K/V a sub-model with k chains lacks (plain CoLM after a smaller one).
  bool needs_recompute(int k) const;

 private:
  void forward_chunk(const int* tokens, int n, int k, float* all_logits);

  const Model& model_;
  int max_chunk_;
  KVCache cache_;
  std::vector<int> tokens_;
  // Scratch for one chunk: (max_chunk, width) row-major.
  std::vector<float> x_, xn_, q_, att_, h1_, h3_, g_, rstd_, lse_, logits_;
  std::vector<int> positions_;
};

}  // namespace chainlm
