#pragma once
// Next-token sampling: greedy at temperature 0, else temperature, top-k and top-p (nucleus)
// over the softmax, driven by a seeded RNG so a seed reproduces a generation.
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace chainlm {

struct SamplingOptions {
  float temperature = 1.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
};

// Throws chainlm::Error naming the bad field.
void validate_sampling(const SamplingOptions& o);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o) : opt_(o), rng_(o.seed) {}
  int sample(const float* logits, int vocab_size);

 private:
  SamplingOptions opt_;
  Rng rng_;
  std::vector<std::pair<float, int>> scratch_;
};

}  // namespace chainlm
