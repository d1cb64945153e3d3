#include "cli/training_samples.h"

#include <algorithm>
#include <memory>

#include "cli/parse_util.h"
#include "core/error.h"
#include "infer/generator.h"
#include "io/text_encoding.h"
#include "io/tokenizer.h"

namespace chainlm::cli {

std::vector<int> parse_sample_chains(const std::string& list, int n_chains) {
  // The rules of every number list (parse_int_list): spaces around items, no empty item.
  std::vector<int> chains;
  for (int k : parse_int_list(list, "--sample-chains")) {
    CHAINLM_CHECK(k >= 1 && k <= n_chains, "--sample-chains ", list, ": ", k, " is outside 1..",
                  n_chains, " (the model has ", n_chains, " chain", n_chains == 1 ? "" : "s", ")");
    CHAINLM_CHECK(std::find(chains.begin(), chains.end(), k) == chains.end(), "--sample-chains ",
                  list, ": ", k, " is given twice");
    chains.push_back(k);
  }
  std::sort(chains.begin(), chains.end());
  return chains;
}

Trainer::SampleFn make_training_sampler(const TrainOptions& opt, const ModelConfig& config) {
  if (opt.sample_every <= 0) return nullptr;
  CHAINLM_CHECK(opt.sample_tokens >= 0, "--sample-tokens ", opt.sample_tokens,
                " must be at least 1 (or 0 for the default)");
  const int n = config.n_chains();
  std::vector<int> chains = opt.sample_chains;
  for (int k : chains)
    CHAINLM_CHECK(k >= 1 && k <= n, "--sample-chains: ", k, " is outside 1..", n);
  if (chains.empty())
    for (int k = 1; k <= n; ++k) chains.push_back(k);

  std::shared_ptr<const Tokenizer> tok = load_tokenizer(opt.data_dir);
  const int prompt_tokens = 1 + static_cast<int>(tok->encode(opt.sample_prompt).size());
  // What generate gives from this prompt when the context fills: a token for each position
  // after the prompt, and the one sampled at the last position (the samples are its output).
  const int room = config.max_seq_len - prompt_tokens + 1;
  CHAINLM_CHECK(room >= 1, "--sample-prompt is ", prompt_tokens,
                " tokens (BOS included), which leaves no room in the model's context of ",
                config.max_seq_len, " tokens; shorten it");
  CHAINLM_CHECK(
      opt.sample_tokens <= room, "--sample-tokens ", opt.sample_tokens,
      " is more than the model's context of ", config.max_seq_len, " tokens leaves after ",
      opt.sample_prompt.empty() ? std::string("BOS (no --sample-prompt: 1 token)")
                                : cat("--sample-prompt (", prompt_tokens, " tokens, BOS included)"),
      ": at most ", room, " fit; give fewer or leave it out");
  // 0: 32 tokens, or what the context leaves after the prompt.
  const int max_tokens = opt.sample_tokens > 0 ? opt.sample_tokens : std::min(32, room);

  const std::string prompt = opt.sample_prompt;
  return [tok, chains, prompt, max_tokens](const Model& model) {
    nlohmann::json samples = nlohmann::json::array();
    for (int k : chains) {
      GenerateOptions g;
      g.max_tokens = max_tokens;
      g.chains = k;
      g.sampling.temperature = 0;  // greedy: samples compare across steps, not across draws
      std::string continuation;
      const GenerateResult r = generate(model, *tok, prompt, g,
                                        [&](const std::string& piece) { continuation += piece; });
      samples.push_back({{"chains", k},
                         {"text", replace_invalid_utf8(continuation)},
                         {"tokens", r.tokens.size()}});
    }
    return samples;
  };
}

}  // namespace chainlm::cli
