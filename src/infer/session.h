#pragma once
// Incremental inference over a KV cache (SPEC A4, A8): prefill a prompt, then decode one
// token at a time with any number of active chains, switching between tokens. PHD models
// (SPEC B3) keep their originals' K/V in the cache and, with a window, a ring of the last
// hidden tokens; a decode step runs the K copies of the new token as one pass of K rows.
#include <cstddef>
#include <vector>

#include "core/aligned_vector.h"
#include "infer/kv_cache.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "model/model.h"

namespace chainlm {

class InferenceSession {
 public:
  // max_chunk bounds the rows of one forward pass (longer inputs run in chunks); a PHD pass
  // also holds the hidden copies of a prompt's last positions. kv_cache: what the KV cache
  // holds its rows in (kv_cache.h; Auto resolved for the model, F16 refused for PHD).
  // positions: the longest sequence the session will hold, its KV cache's rows (0 or more than
  // max_seq_len: max_seq_len). generate sizes it to the prompt and --max-tokens: a model of a
  // 128K context allocated the whole context's cache for a few tokens.
  explicit InferenceSession(const Model& model, int max_chunk = 512,
                            KvCacheType kv_cache = KvCacheType::Auto, int positions = 0);

  // Bytes a session of this model holds (KV cache, hidden-token ring, scratch), worked out
  // without allocating it: serving checks max_sessions of them fit before it starts. kv_cache
  // is the resolved type (F32 or F16).
  static std::size_t memory_bytes(const ModelConfig& config, int max_chunk = 512,
                                  KvCacheType kv_cache = KvCacheType::F32, int positions = 0);
  // PHD-SWA/CSWA: the hidden-token ring's rows per layer and its bytes (K and V, fp32, every
  // layer) a session holds beside its cache; 0 for other models. `chainlm info` shows them.
  static int phd_ring_rows(const ModelConfig& config, int max_chunk = 512);
  static std::size_t phd_ring_bytes(const ModelConfig& config, int max_chunk = 512);
  // The positions a session holds at most (its cache's rows).
  int capacity() const { return capacity_; }

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

  // prefill in pieces, for a server that interleaves them with other sequences' decoding
  // steps: runs the next at most `budget` tokens of `prompt`, of which the session holds the
  // first length(), and returns the next-token logits once all of it is in (null before).
  // The same prompt and budget give the same bits whatever runs between the calls. With
  // all_logits, also writes the logits of every token this part runs (part x V floats).
  const float* prefill_part(const std::vector<int>& prompt, int k, bool chain1_prefill, int budget,
                            float* all_logits = nullptr);

  // Appends one token with k chains; returns its next-token logits.
  const float* decode(int token, int k) { return append(&token, 1, k); }

  // Positions whose K/V a sub-model with k chains lacks (plain CoLM after a smaller one).
  bool needs_recompute(int k) const;

  // PHD: when a pass of several tokens ends at position `end`, only the last
  // phd_hidden_positions(end) positions need their hidden copies computed for exact logits
  // and ring (SPEC B3): 1 for PHD; the positions of the last chunk for CSWA; for SWA
  // ceil(L*R/(K-1)) + 1 with R = max(W, K-2) (and no more than that for CSWA either). With
  // bounded prefill off, every position's copies run (the paper's K-times prefill).
  // most: the largest value over every end (what a pass must make room for).
  int phd_hidden_positions(int end, bool most = false) const;
  void set_bounded_prefill(bool on) { bounded_prefill_ = on; }

 private:
  friend class BatchDecoder;  // batch_decode.h: one step of several sessions in one pass
  struct Sizes {
    // pass_positions: the most positions a PHD pass runs with all their copies; the ring
    // holds their hidden tokens while the pass runs.
    int max_chunk, max_rows, ring_rows, pass_positions;
  };
  static Sizes sizes_for(const ModelConfig& config, int max_chunk);
  const float* append_until(const int* tokens, int n, int k, float* all_logits, int final_end);
  // PHD pass bookkeeping, shared with BatchDecoder. Before a pass that adds n_new hidden
  // tokens from position hidden_from on: drops the ring if they do not follow its tokens (or
  // a CSWA chunk starts), makes room, and returns the ring row where they go.
  int phd_ring_prepare(int hidden_from, int n_new);
  // Layer l's K/V rows of the positions [hidden_from, ...) with all their copies, copy by copy
  // (mixed rows, row stride ld): copy 0 into the cache, the others into the ring at ring_row.
  void phd_store_kv(int l, int hidden_from, int ring_row, const float* k_rows, const float* v_rows, int ld,
                    int mixed, int width);
  // The keys layer l's attention reads in a pass ending at position `end`.
  PhdKeys phd_keys(int l, int end, int n_new);
  // After the pass: the ring keeps the last W hidden tokens (CSWA: of the last chunk).
  void phd_ring_finish(int end, int n_new);
  void run(const int* tokens, int n, int k, float* all_logits, int final_end);
  void forward_chunk(const int* tokens, int n, int k, float* all_logits);
  void forward_chunk_phd(const int* tokens, int n, int k, int hidden_from, float* all_logits);

  const Model& model_;
  int max_chunk_;
  int capacity_;
  KVCache cache_;
  std::vector<int> tokens_;
  // Scratch for one chunk: (max_chunk, width) row-major.
  // Cache-line aligned: the few-row GEMMs load every row of these once per weight row.
  AlignedVector<float> x_, xn_, q_, att_, h1_, h3_, g_, rstd_, lse_, logits_;
  std::vector<int> positions_;
  // PHD: rows per pass (max(max_chunk, K)), every row's token. The pass's new K/V rows (PHD,
  // and a 16-bit cache, whose rows are converted once RoPE has run).
  int max_rows_ = 0, pass_positions_ = 0;
  bool bounded_prefill_ = true;
  std::vector<int> row_tokens_;
  AlignedVector<float> k_new_, v_new_;
  std::vector<GemmNtJob> jobs_;  // a PHD pass's q, K and V products
};

}  // namespace chainlm
