// Generation ends at any token the tokenizer says ends a text (Tokenizer::is_eos): LLaMA-3
// instruct models end turns with <|eot_id|>, <|end_of_text|> or <|eom_id|>.
#include <gtest/gtest.h>

#include "infer/generator.h"
#include "model/model.h"
#include "model/model_test_util.h"

namespace chainlm {
namespace {

// Bytes as tokens (the ByteTokenizer's ids) with a configurable set of end tokens.
class SeveralEndsTokenizer final : public Tokenizer {
 public:
  explicit SeveralEndsTokenizer(std::vector<int> ends) : ends_(std::move(ends)) {}
  std::vector<int> encode(const std::string& text) const override { return bytes_.encode(text); }
  std::string decode(const std::vector<int>& ids) const override { return bytes_.decode(ids); }
  std::string decode_token(int prev, int id) const override { return bytes_.decode_token(prev, id); }
  int vocab_size() const override { return bytes_.vocab_size(); }
  int bos_id() const override { return bytes_.bos_id(); }
  int eos_id() const override { return ends_.front(); }
  bool is_eos(int id) const override { return std::find(ends_.begin(), ends_.end(), id) != ends_.end(); }
  std::string kind() const override { return "test"; }

 private:
  ByteTokenizer bytes_;
  std::vector<int> ends_;
};

TEST(GeneratorEos, StopsAtEveryEndToken) {
  ModelConfig c = test::tiny_config({1}, false, 1);
  c.vocab_size = ByteTokenizer::kVocabSize;
  Model model(c);
  model.init_random(21);
  GenerateOptions o;
  o.max_tokens = 12;
  o.sampling.temperature = 0;
  o.stop_at_eos = false;
  const SeveralEndsTokenizer none({ByteTokenizer::kEos});
  const GenerateResult free_run = generate_tokens(model, none, "ab", o, nullptr);
  ASSERT_EQ(free_run.tokens.size(), 12u);
  // Pick the first generated token that is neither BOS nor EOS and make it a second end token.
  size_t at = 0;
  while (at < free_run.tokens.size() && (none.is_eos(free_run.tokens[at]) || free_run.tokens[at] == none.bos_id())) ++at;
  ASSERT_LT(at, free_run.tokens.size());
  const int second_end = free_run.tokens[at];

  o.stop_at_eos = true;
  const SeveralEndsTokenizer two({ByteTokenizer::kEos, second_end});
  const GenerateResult stopped = generate_tokens(model, two, "ab", o, nullptr);
  EXPECT_EQ(stopped.stop_reason, StopReason::eos);
  size_t first = 0;  // generation ends before the first end token (or BOS) under `two`
  while (!two.is_eos(free_run.tokens[first]) && free_run.tokens[first] != two.bos_id()) ++first;
  EXPECT_LE(first, at);
  EXPECT_EQ(stopped.tokens, std::vector<int>(free_run.tokens.begin(), free_run.tokens.begin() + first));
}

}  // namespace
}  // namespace chainlm
