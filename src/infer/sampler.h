#pragma once
// Next-token sampling: greedy at temperature 0, else temperature, top-k and top-p (nucleus)
// over the softmax, driven by a seeded RNG so a seed reproduces a generation.
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace chainlm {

struct SamplingOptions {
  float temperature = 1.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
  // OpenAI's adjustments of the logits before any of the above (greedy included): a token's
  // logit is lowered by presence_penalty once it has been sampled and by frequency_penalty
  // times the number of times it has been (in this generation: the prompt does not count), and
  // moved by its logit_bias.
  float presence_penalty = 0.0f;   // in [-2, 2]
  float frequency_penalty = 0.0f;  // in [-2, 2]
  std::vector<std::pair<int, float>> logit_bias;  // (token id, bias in [-100, 100])
};

// Throws chainlm::Error naming the bad field.
void validate_sampling(const SamplingOptions& o);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o) : opt_(o), rng_(o.seed) {}
  int sample(const float* logits, int vocab_size);

 private:
  int sample_adjusted(const float* logits, int vocab_size);
  // logits with the penalties and biases applied (into adjusted_), or logits itself when none.
  const float* adjust(const float* logits, int vocab_size);

  SamplingOptions opt_;
  Rng rng_;
  std::vector<std::pair<float, int>> scratch_;
  std::vector<float> adjusted_;
  std::unordered_map<int, int> counts_;  // how often each token has been sampled
};

}  // namespace chainlm
