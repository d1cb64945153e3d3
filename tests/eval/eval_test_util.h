#pragma once
// Models with known answers for the evaluation tests, and a naive log-softmax.
#include <cmath>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/model.h"

namespace chainlm::test {

// A byte-vocabulary model (V = 258: bytes, BOS 256, EOS 257).
inline ModelConfig byte_config(std::vector<int> chains, bool kv_share) {
  ModelConfig c;
  int s = 0;
  for (int ci : chains) s += ci;
  c.n_heads = 2 * s;
  c.dim = 8 * c.n_heads;
  c.ffn_dim = 12 * s;
  c.n_layers = 2;
  c.n_kv_heads = kv_share ? 2 : c.n_heads;
  c.vocab_size = ByteTokenizer::kVocabSize;
  c.chains = chains;
  c.kv_share = kv_share;
  c.max_seq_len = 32;
  validate_config(c, "test");
  return c;
}

// A checkpoint directory a command can load: config, weights and the byte tokenizer.
inline void save_byte_checkpoint(const Model& model, const std::string& dir) {
  save_model(model, dir);
  save_tokenizer_to_dir("byte", dir);
}

// log softmax(logits)[target], in double precision.
inline double log_softmax_at(const float* logits, int V, int target) {
  double mx = logits[0];
  for (int v = 1; v < V; ++v) mx = std::max(mx, (double)logits[v]);
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp((double)logits[v] - mx);
  return (double)logits[target] - mx - std::log(sum);
}

// A unigram model with two chains of 4 dimensions each (dim 8, one layer): every token
// embeds to the all-ones vector and every block's weights are zero, so the residual stream
// stays all ones, the per-chain final norm keeps it so, and sub-model k's logits are the
// row sums of the head's first k chain segments. Sub-model 1 scores 'a' 4 and 'b' 2;
// sub-model 2 adds 6 to 'b' (so prefers it); every other token scores 0.
inline ModelConfig unigram_config() {
  ModelConfig c;
  c.dim = 8;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.ffn_dim = 16;
  c.n_layers = 1;
  c.vocab_size = ByteTokenizer::kVocabSize;
  c.chains = {1, 1};
  c.max_seq_len = 32;
  validate_config(c, "unigram");
  return c;
}

inline void set_unigram_weights(Model& m) {
  ParamStore& ps = m.params();
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    float* w = ps.value(i);
    const bool norm =
        p.name.size() >= 11 && p.name.compare(p.name.size() - 11, 11, "norm.weight") == 0;
    std::fill(w, w + p.numel(), p.name == "tok_embeddings.weight" || norm ? 1.0f : 0.0f);
    if (p.name == "output.weight") {
      for (int d = 0; d < 4; ++d) {
        w['a' * 8 + d] = 1.0f;      // chain 1: 'a' scores 4
        w['b' * 8 + d] = 0.5f;      // chain 1: 'b' scores 2
        w['b' * 8 + 4 + d] = 1.5f;  // chain 2: 'b' gains 6
      }
    }
  }
}

// The unigram model's log-probability of token t under sub-model k, from the scores above.
inline double unigram_logp(int k, int t) {
  const double a = 4, b = k == 1 ? 2 : 8;
  const double log_z = std::log((ByteTokenizer::kVocabSize - 2) + std::exp(a) + std::exp(b));
  return (t == 'a' ? a : t == 'b' ? b : 0.0) - log_z;
}

inline double unigram_text_logp(int k, const std::string& text) {
  double s = 0;
  for (unsigned char ch : text) s += unigram_logp(k, ch);
  return s;
}

}  // namespace chainlm::test
