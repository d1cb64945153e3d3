#pragma once
// A tiny two-chain CoLM-Air model over the byte tokenizer, for the evaluation targets: the
// parsed tasks are scored for real, so truncation and scoring see fuzzed text too.
#include "core/threads.h"
#include "model/model.h"

namespace chainlm::fuzz {

inline Model& tiny_eval_model() {
  static Model* model = [] {
    set_num_threads(1);
    ModelConfig c;
    c.dim = 8;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.ffn_dim = 16;
    c.vocab_size = 258;  // ByteTokenizer::kVocabSize
    c.chains = {1, 1};
    c.kv_share = true;
    c.max_seq_len = 24;
    validate_config(c, "fuzz eval model");
    auto* m = new Model(c);  // lives as long as the process
    m->init_random(1);
    return m;
  }();
  return *model;
}

}  // namespace chainlm::fuzz
