#pragma once
// Log-likelihood of parts of token sequences under every sub-model k, the measure behind
// multiple-choice (eval choice) and minimal-pair (eval pairs) evaluation.
#include <vector>

#include "model/model.h"

namespace chainlm {

// Scores log p(tokens[i] | tokens[0..i)) for i = first_scored .. size - 1.
struct ScoringRequest {
  std::vector<int> tokens;  // starts with BOS
  int first_scored = 1;     // >= 1
};

// The longest sequence (in tokens) score_sequences accepts: max_seq_len inputs + 1.
int max_scored_sequence_tokens(const Model& model);

// For each request, the summed natural-log likelihood of its scored tokens under sub-models
// k = 1..k_max (result[request][k-1]). Each sequence is one forward pass of sub-model k_max
// (Model::evaluate gives every smaller sub-model from the same pass), padded to a multiple
// of 8 positions so similar lengths share activation buffers; requests run shortest first,
// spread over the OpenMP threads, each with its own copy of the model (unless the
// parameters exceed 1 GiB). The model's own buffers are used by thread 0.
// Throws on an empty request, first_scored outside 1..size-1, a sequence longer than
// max_scored_sequence_tokens, or token ids outside the vocabulary.
std::vector<std::vector<double>> score_sequences(Model& model,
                                                 const std::vector<ScoringRequest>& requests,
                                                 int k_max);

}  // namespace chainlm
