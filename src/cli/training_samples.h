#pragma once
// Sample generations during training (`train --sample-every N --sample-prompt TEXT`): the
// train command builds the sampler here, where generation (infer) and the data's tokenizer are
// at hand, and hands it to the Trainer, which calls it on its schedule.
#include <string>
#include <vector>

#include "model/config.h"
#include "train/trainer.h"

namespace chainlm::cli {

// "1,3" -> {1, 3}; throws naming --sample-chains when a chain is outside 1..n_chains or repeats.
std::vector<int> parse_sample_chains(const std::string& list, int n_chains);

// Checks the sample settings of opt against the model and the tokenizer of opt.data_dir (the
// prompt must leave room for the tokens in the context) and returns the sampler: greedy
// decoding of opt.sample_tokens tokens (0: 32 or what the context leaves) after the prompt from
// each chosen sub-model, each as
// {"chains": k, "text": continuation, "tokens": count}, text made valid UTF-8 (a token may end
// inside a character). Returns nullptr when sampling is off.
Trainer::SampleFn make_training_sampler(const TrainOptions& opt, const ModelConfig& config);

}  // namespace chainlm::cli
