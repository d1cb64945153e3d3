#pragma once
// The model config the request fuzzers parse against: a 4-chain byte-level model with a
// 64-token context (the limits the parsers check: chains, max_tokens, token ids, lengths).
#include "io/tokenizer.h"
#include "model/config.h"

inline chainlm::ModelConfig fuzz_served_config() {
  chainlm::ModelConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 1;
  c.ffn_dim = 64;
  c.vocab_size = chainlm::ByteTokenizer::kVocabSize;
  c.chains = {1, 1, 1, 1};
  c.kv_share = true;
  c.max_seq_len = 64;
  chainlm::validate_config(c, "fuzz config");
  return c;
}
