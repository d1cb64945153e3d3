#pragma once
// A chainlm Model from a llama2.c checkpoint (io/llama2c.h): an ordinary LLaMA model, i.e.
// chains [1], whose every Chain-of-Linear is the single block `...chain0.weight`.
#include <memory>

#include "io/llama2c.h"
#include "model/model.h"

namespace chainlm {

// The config run.c implies: chains [1], no KV sharing, RoPE theta 10000 on adjacent pairs
// (llama2.c's q/k layout, so no permutation), RMSNorm eps 1e-5 inside the square root,
// tie_embeddings = shared classifier, max_seq_len = seq_len. `where` names the source in errors.
ModelConfig config_from_llama2c(const Llama2cHeader& h, const std::string& where);

std::unique_ptr<Model> model_from_llama2c(const Llama2cWeights& w,
                                          const std::string& source = "llama2.c checkpoint");

}  // namespace chainlm
