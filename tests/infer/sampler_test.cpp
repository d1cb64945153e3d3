// The logit adjustments of OpenAI's API in the sampler: logit_bias, presence and frequency
// penalties, on hand-made logits whose answer can be worked out by hand.
#include "infer/sampler.h"

#include <gtest/gtest.h>

#include <limits>
#include <utility>
#include <vector>

#include "core/error.h"
#include "infer/head_logits.h"

namespace chainlm {
namespace {

TEST(Sampler, LogitBiasMovesGreedyChoices) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f};
  SamplingOptions o;
  o.temperature = 0;
  EXPECT_EQ(Sampler(o).sample(logits.data(), 4), 1);
  o.logit_bias = {{1, -100.0f}};
  EXPECT_EQ(Sampler(o).sample(logits.data(), 4), 2);  // the next best
  o.logit_bias = {{3, 2.6f}};                          // 0.5 + 2.6 = 3.1 > 3
  EXPECT_EQ(Sampler(o).sample(logits.data(), 4), 3);
  // With temperature, a +100 bias makes the token certain (its probability is e^-97 from 1).
  o.temperature = 1;
  o.logit_bias = {{0, 100.0f}};
  Sampler s(o);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits.data(), 4), 0);
}

// Greedy sampling takes the first largest logit, as llama2.c's argmax (tests/kernels/
// argmax_test.cpp checks first_argmax at length): ties, NaNs and both zeros.
// (NaN logits are refused: NonFiniteLogitsAreAnError; first_argmax's own NaN rule is tested
// with the kernels.)
TEST(Sampler, GreedyIsTheFirstLargestLogit) {
  SamplingOptions o;
  o.temperature = 0;
  Sampler s(o);
  const std::vector<std::pair<std::vector<float>, int>> cases = {
      {{1, 3, 2, 3}, 1}, {{-0.0f, 0.0f}, 0}, {{0.0f, -0.0f}, 0}};
  for (const auto& [x, want] : cases) EXPECT_EQ(s.sample(x.data(), (int)x.size()), want);
  std::vector<float> many(4096, -1.0f);
  many[1234] = many[3000] = 2.0f;
  EXPECT_EQ(s.sample(many.data(), 4096), 1234);
}

// A temperature so small that logit / temperature overflows: infinities made every probability
// NaN and the sampler returned the last token id, every time ("OnceGGGGGGGGGG").
TEST(Sampler, ATinyTemperatureIsGreedy) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f},
                           negative = {-5.0f, -2.0f, -3.0f, -9.0f};
  for (float t : {1e-40f, 1e-38f, std::numeric_limits<float>::denorm_min()}) {
    SamplingOptions o;
    o.temperature = t;
    o.seed = 3;
    Sampler s(o);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(s.sample(logits.data(), 4), 1) << t;
      EXPECT_EQ(s.sample(negative.data(), 4), 1) << t;  // every logit / t is -inf
    }
  }
}

TEST(Sampler, PenaltiesLowerTokensAlreadySampled) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.2f};
  SamplingOptions o;
  o.temperature = 0;
  Sampler plain(o);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(plain.sample(logits.data(), 3), 0);
  // Presence: 2 - 0.6 = 1.4 < 1.5 after token 0 once, so token 1; then 1.5 - 0.6 = 0.9, and
  // token 0 (1.4) leads token 2 (1.2) from then on: presence counts once, however many times.
  o.presence_penalty = 0.6f;
  Sampler presence(o);
  EXPECT_EQ(presence.sample(logits.data(), 3), 0);
  EXPECT_EQ(presence.sample(logits.data(), 3), 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(presence.sample(logits.data(), 3), 0);
  // With 0.9 token 2 (1.2) comes before the penalized 0 (1.1) and 1 (0.6) once both are seen.
  o.presence_penalty = 0.9f;
  Sampler stronger(o);
  EXPECT_EQ(stronger.sample(logits.data(), 3), 0);
  EXPECT_EQ(stronger.sample(logits.data(), 3), 1);
  EXPECT_EQ(stronger.sample(logits.data(), 3), 2);
  // Frequency: each sampling of token 0 lowers it by 0.3 more: 2, 1.7 (still first), 1.4 < 1.5.
  o.presence_penalty = 0;
  o.frequency_penalty = 0.3f;
  Sampler frequency(o);
  EXPECT_EQ(frequency.sample(logits.data(), 3), 0);
  EXPECT_EQ(frequency.sample(logits.data(), 3), 0);
  EXPECT_EQ(frequency.sample(logits.data(), 3), 1);
  // A negative penalty favours repeats.
  o.frequency_penalty = -2.0f;
  o.logit_bias = {{1, 0.6f}};  // 1.5 + 0.6 = 2.1: token 1 first, then it only gains
  Sampler repeat(o);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(repeat.sample(logits.data(), 3), 1);
}

// A diverged model's logits (NaN, or infinities from weights near float's range) gave token 0
// greedily and random words sampled, without a word (a user trial): greedy and sampled, the
// sampler refuses them, naming the first.
TEST(Sampler, NonFiniteLogitsAreAnError) {
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  for (const float bad : {nan, inf, -inf})
    for (const float temperature : {0.0f, 0.8f}) {
      std::vector<float> logits(37, 0.5f);
      logits[29] = bad;
      SamplingOptions o;
      o.temperature = temperature;
      o.top_k = 5;
      Sampler s(o);
      try {
        s.sample(logits.data(), (int)logits.size());
        ADD_FAILURE() << bad << " at temperature " << temperature << " was sampled from";
      } catch (const Error& e) {
        EXPECT_NE(
            std::string(e.what()).find("the model computes NaN or infinite logits (logit 29 = "),
            std::string::npos)
            << e.what();
      }
    }
  // The largest finite logits are logits.
  std::vector<float> big(9, -std::numeric_limits<float>::max());
  big[4] = std::numeric_limits<float>::max();
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  EXPECT_EQ(Sampler(greedy).sample(big.data(), 9), 4);
}

// The final norm's rstd of a hidden state whose squares overflow is 0 (its logits all 0), of
// one holding NaN NaN; only the k active chains of each row are looked at.
TEST(CheckFinalNorm, AnOverflowedOrNanHiddenStateIsAnError) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> fine = {0.5f, 2.0f, 0.0f, nan, 1.5f, 0.25f, 0.0f, nan};  // 2 rows, n 4
  EXPECT_NO_THROW(check_final_norm(fine.data(), 2, 4, 2));
  for (const float bad : {0.0f, nan}) {
    std::vector<float> rstd = fine;
    rstd[5] = bad;
    try {
      check_final_norm(rstd.data(), 2, 4, 2);
      ADD_FAILURE() << bad << " passed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad == 0.0f ? "sum of squares is infinite" : "is NaN"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Sampler, AdjustmentsAreValidated) {
  SamplingOptions o;
  o.presence_penalty = 2.5f;
  EXPECT_THROW(validate_sampling(o), Error);
  o.presence_penalty = 0;
  o.frequency_penalty = -3;
  EXPECT_THROW(validate_sampling(o), Error);
  o.frequency_penalty = 0;
  o.logit_bias = {{3, 101.0f}};
  EXPECT_THROW(validate_sampling(o), Error);
  o.logit_bias = {{3, -100.0f}};
  EXPECT_NO_THROW(validate_sampling(o));
}

}  // namespace
}  // namespace chainlm
