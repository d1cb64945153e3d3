#pragma once
// Text generation with sub-model k (elastic inference, SPEC A8).
#include <functional>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace chainlm {

struct GenerateOptions {
  int max_tokens = 100;
  int chains = 0;  // active chains; 0 = all
  SamplingOptions sampling;
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int> prompt_tokens;  // BOS included
  std::vector<int> tokens;         // generated
  std::string text;                // prompt followed by the continuation
  double prefill_ms = 0, decode_ms_per_token = 0, tokens_per_s = 0;
};

// Encodes prompt with BOS, then samples up to max_tokens (stopping at EOS/BOS or at the
// model's max_seq_len). on_text, if set, receives each token's text as it is produced.
GenerateResult generate(Model& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text = nullptr);

}  // namespace chainlm
