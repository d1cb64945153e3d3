#include "infer/generator.h"

#include "core/error.h"
#include "core/timer.h"

namespace chainlm {

GenerateResult generate(Model& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text) {
  const ModelConfig& c = model.config();
  const int k = opt.chains == 0 ? c.n_chains() : opt.chains;
  CHAINLM_CHECK(k >= 1 && k <= c.n_chains(), "--chains ", opt.chains, " is outside 1..",
                c.n_chains(), " (the model has ", c.n_chains(), " chains)");
  CHAINLM_CHECK(opt.max_tokens >= 0, "max tokens must be >= 0");
  validate_sampling(opt.sampling);
  CHAINLM_CHECK(tok.vocab_size() <= c.vocab_size, "the tokenizer has ", tok.vocab_size(),
                " tokens but the model's vocab_size is ", c.vocab_size);
  GenerateResult res;
  res.prompt_tokens.push_back(tok.bos_id());
  for (int t : tok.encode(prompt)) res.prompt_tokens.push_back(t);
  CHAINLM_CHECK((int)res.prompt_tokens.size() <= c.max_seq_len, "the prompt is ",
                res.prompt_tokens.size(), " tokens (BOS included), longer than the model's max_seq_len ",
                c.max_seq_len);
  res.text = prompt;
  std::vector<int> seq = res.prompt_tokens;
  std::vector<float> logits;
  Sampler sampler(opt.sampling);
  Timer total;
  double first_ms = 0;
  // Recomputes the whole sequence per token: the KV-cache decoder replaces this.
  while ((int)res.tokens.size() < opt.max_tokens && (int)seq.size() < c.max_seq_len) {
    Timer t;
    const int T = (int)seq.size();
    logits.resize((size_t)T * c.vocab_size);
    model.logits(seq.data(), 1, T, k, logits.data());
    const int next = sampler.sample(logits.data() + (size_t)(T - 1) * c.vocab_size, c.vocab_size);
    if (res.tokens.empty()) first_ms = t.seconds() * 1e3;
    if (opt.stop_at_eos && (next == tok.eos_id() || next == tok.bos_id())) break;
    const std::string piece = tok.decode_token(seq.back(), next);
    res.text += piece;
    if (on_text) on_text(piece);
    seq.push_back(next);
    res.tokens.push_back(next);
  }
  const double secs = total.seconds();
  res.prefill_ms = first_ms;
  if (res.tokens.size() > 1)
    res.decode_ms_per_token = (secs * 1e3 - first_ms) / (res.tokens.size() - 1);
  res.tokens_per_s = secs > 0 ? res.tokens.size() / secs : 0;
  return res;
}

}  // namespace chainlm
