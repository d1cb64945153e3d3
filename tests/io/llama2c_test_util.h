#pragma once
// Small random llama2.c checkpoints and tokenizer.bin files for tests.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/llama2c.h"

namespace chainlm::testing {

inline Llama2cHeader small_llama2c_header(bool shared_classifier) {
  Llama2cHeader h;
  h.dim = 48;
  h.hidden_dim = 100;
  h.n_layers = 2;
  h.n_heads = 6;
  h.n_kv_heads = 2;  // grouped-query: 3 query heads per KV head
  h.vocab_size = 67;
  h.seq_len = 32;
  h.shared_classifier = shared_classifier;
  return h;
}

// Random weights of the sizes h implies: matrices ~ 0.1*N(0,1), norm gains ~ 1 + 0.1*N(0,1).
inline Llama2cWeights random_llama2c(const Llama2cHeader& h, uint64_t seed) {
  Rng rng(seed);
  auto fill = [&](std::vector<float>& v, int64_t n, float mean, float stddev) {
    v.resize(static_cast<size_t>(n));
    for (auto& x : v) x = mean + stddev * rng.normal();
  };
  const int64_t D = h.dim, F = h.hidden_dim, L = h.n_layers, V = h.vocab_size, KV = h.kv_dim();
  Llama2cWeights w;
  w.h = h;
  fill(w.token_embedding, V * D, 0, 1.0f);
  fill(w.rms_att, L * D, 1, 0.1f);
  fill(w.wq, L * D * D, 0, 0.1f);
  fill(w.wk, L * KV * D, 0, 0.1f);
  fill(w.wv, L * KV * D, 0, 0.1f);
  fill(w.wo, L * D * D, 0, 0.1f);
  fill(w.rms_ffn, L * D, 1, 0.1f);
  fill(w.w1, L * F * D, 0, 0.1f);
  fill(w.w2, L * D * F, 0, 0.1f);
  fill(w.w3, L * F * D, 0, 0.1f);
  fill(w.rms_final, D, 1, 0.1f);
  if (!h.shared_classifier) fill(w.wcls, V * D, 0, 0.1f);
  return w;
}

// One tokenizer.bin entry.
inline void append_tokenizer_entry(std::string& out, float score, const std::string& piece) {
  const int32_t len = static_cast<int32_t>(piece.size());
  out.append(reinterpret_cast<const char*>(&score), 4);
  out.append(reinterpret_cast<const char*>(&len), 4);
  out += piece;
}

// The bytes of a tokenizer.bin holding pieces with scores (max_token_length computed).
inline std::string tokenizer_bin_bytes(const std::vector<std::string>& pieces,
                                       const std::vector<float>& scores) {
  int32_t max_len = 1;
  for (const auto& p : pieces) max_len = std::max<int32_t>(max_len, (int32_t)p.size());
  std::string out(reinterpret_cast<const char*>(&max_len), 4);
  for (size_t i = 0; i < pieces.size(); ++i) append_tokenizer_entry(out, scores[i], pieces[i]);
  return out;
}

}  // namespace chainlm::testing
