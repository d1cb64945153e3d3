#pragma once
// One decoding step for several sequences at once (continuous batching in `chainlm serve`).
// Every sequence has its own InferenceSession (its KV cache) and its own sub-model: the new
// tokens pass every layer together, and each Chain-of-Linear block runs one GEMM over the rows
// whose sub-model uses it (the rows are ordered by chain count, so those are a prefix). The
// weights are streamed once per step for all rows, where decoding them one by one streams them
// once per row; each row then attends over its own session's cache.
//
// Bit-exact: a row gets exactly the logits session.decode(token, chains) gives it alone (the
// few-row GEMMs are batch-invariant, gemm.h kMaxDecodeRows; every other kernel works row by
// row). A PHD step brings its K copies of the new token (K rows of the pass), each sequence
// with its own hidden-token ring. Steps that cannot share a pass run alone through
// session.decode: plain CoLM sequences whose chain count grew (their cache's new chains are
// recomputed first), and PHD with more than kMaxDecodeRows copies.
#include <vector>

#include "core/aligned_vector.h"
#include "infer/session.h"

namespace chainlm {

struct DecodeRow {
  InferenceSession* session;
  int token;   // appended at session->length()
  int chains;  // sub-model of this step
};

class BatchDecoder {
 public:
  explicit BatchDecoder(const Model& model);

  // Appends each row's token to its session (rows must name distinct sessions of this model)
  // and returns each row's next-token logits, in the rows' order: valid until that session's
  // next step.
  std::vector<const float*> step(const std::vector<DecodeRow>& rows);

 private:
  // Sequences sharing one pass (their rows at most kMaxDecodeRows), ordered by chains, largest
  // first.
  void forward(const DecodeRow* seqs, int n);

  const Model& model_;
  // Scratch for kMaxDecodeRows rows: (rows, width) row-major.
  // Cache-line aligned: the few-row GEMMs load every row of these once per weight row.
  AlignedVector<float> x_, xn_, q_, att_, h1_, h3_, g_, k_new_, v_new_, rstd_, lse_, logits_;
  std::vector<int> tokens_, positions_;
  std::vector<GemmNtJob> jobs_;  // the products of one input, run together (gemm_nt_jobs)
};

}  // namespace chainlm
