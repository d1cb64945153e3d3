// generate decodes on fewer of its threads while that measures faster (infer/decode_threads.h):
// a small model on two threads beside busy processes decoded ~1,000x slower than on one. The
// tokens do not depend on the count, and the caller's thread count is back afterwards.
#include <gtest/gtest.h>
#include <omp.h>

#include <chrono>
#include <memory>
#include <thread>

#include "infer/decode_threads.h"
#include "infer/generator.h"
#include "model/model.h"

namespace chainlm {
namespace {

// Wide enough that a decoding step's products are split over two threads (kThreadedWeightBytes).
std::unique_ptr<Model> make_model() {
  ModelConfig c;
  c.dim = 128;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.ffn_dim = 384;
  c.n_layers = 2;
  c.vocab_size = ByteTokenizer::kVocabSize;
  c.chains = {1};
  c.max_seq_len = 256;
  validate_config(c, "test");
  auto m = std::make_unique<Model>(c);
  m->init_random(5);
  return m;
}

struct Generated {
  GenerateResult result;
  int threads_after = 0;
};

// 120 sampled tokens on 2 threads; a turn on `slow_count` threads takes `slow_ms` longer (its
// callback sleeps), as when each region waits for the second thread's time slice (2). Tens of
// ms, not the 2 a busy core costs: the turns of the other count must measure faster in every
// trial though the sanitizers and a test beside this one slow them (with 2 ms, 1 in ~1,000 runs
// lost).
Generated run(const Model& model, bool adaptive, int slow_count, int slow_ms = 20) {
  omp_set_num_threads(2);
  GenerateOptions o;
  o.max_tokens = 120;
  o.sampling.temperature = 0.9f;
  o.sampling.seed = 3;
  o.stop_at_eos = false;
  o.adaptive_threads = adaptive;
  const ByteTokenizer tok;
  Generated r;
  r.result = generate_tokens(model, tok, "Once upon", o, [&](const TokenEvent&) {
    if (omp_get_max_threads() == slow_count)
      std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
    return true;
  });
  r.threads_after = omp_get_max_threads();
  return r;
}

TEST(GeneratorThreads, ComesDownToOneThreadWhenTwoAreSlowerWithTheSameTokens) {
  const auto model = make_model();
  const Generated fixed = run(*model, false, 2);
  const Generated adaptive = run(*model, true, 2);
  ASSERT_EQ(fixed.result.tokens.size(), 120u);
  EXPECT_EQ(adaptive.result.tokens, fixed.result.tokens);
  EXPECT_EQ(fixed.result.threads, 2);
  EXPECT_EQ(fixed.result.decode_threads, 2) << "fixed: every thread throughout";
  EXPECT_EQ(adaptive.result.threads, 2);
  EXPECT_EQ(adaptive.result.decode_threads, 1) << "two threads measured slower";
  EXPECT_EQ(adaptive.threads_after, 2) << "the caller's thread count is restored";
  EXPECT_EQ(fixed.threads_after, 2);
}

// 100 ms: with another process busy (a test or build beside this one), two threads' turns of
// this model took up to ~20 ms, and one thread's 20 ms trial then won. Trials of one thread
// stop after three turns here (the first not counted), so the longer sleep costs ~0.3 s.
TEST(GeneratorThreads, KeepsEveryThreadWhenOneIsSlower) {
  const auto model = make_model();
  const Generated fixed = run(*model, false, 1);
  const Generated adaptive = run(*model, true, 1, 100);
  EXPECT_EQ(adaptive.result.tokens, fixed.result.tokens);
  EXPECT_EQ(adaptive.result.decode_threads, 2) << "trials of one thread lost";
  EXPECT_EQ(adaptive.threads_after, 2);
}

TEST(GeneratorThreads, TheFirstTrialComesWithinAShortGeneration) {
  static_assert(DecodeThreadTuner::kFirstTrial + 1 + DecodeThreadTuner::kProbeSteps < 40,
                "a generation of a few dozen tokens must get its trial");
  DecodeThreadTuner t(2);
  int turns = 0;
  while (!t.in_trial() && turns < 100) {
    t.record(1, 20e-3);
    ++turns;
  }
  EXPECT_EQ(turns, DecodeThreadTuner::kFirstTrial);
  for (int i = 0; i <= DecodeThreadTuner::kProbeSteps; ++i) t.record(1, 0.05e-3);
  EXPECT_EQ(t.chosen(), 1);
}

// On a quiet machine each lost trial costs its turns on fewer threads: after the early first
// one, the next waits kFirstProbe turns, not kFirstTrial.
TEST(GeneratorThreads, AfterALostEarlyTrialTheNextWaitsLonger) {
  DecodeThreadTuner t(2);
  for (int i = 0; i < DecodeThreadTuner::kFirstTrial; ++i) t.record(1, 3e-3);
  ASSERT_TRUE(t.in_trial());
  for (int i = 0; i <= DecodeThreadTuner::kEarlyTurns; ++i) t.record(1, 4e-3);
  ASSERT_FALSE(t.in_trial()) << "a third slower: stopped early";
  int turns = 0;
  while (!t.in_trial() && turns < 1000) {
    t.record(1, 3e-3);
    ++turns;
  }
  EXPECT_EQ(turns, DecodeThreadTuner::kFirstProbe);
}

// A prompt one core reads in well under a millisecond runs on one thread (its parallel regions
// cost more than they share; beside busy processes a 64-dim model's prompt took 45-107 ms on two
// threads against 0.9 on one), with the tokens of two; a larger or longer one keeps every thread,
// as does --fixed-threads.
TEST(GeneratorThreads, ASmallPromptIsReadOnOneThreadWithTheTokensOfTwo) {
  const auto small = make_model();  // 2 x 128 x 128 x ... : ~0.3 M multiply-adds per token
  ASSERT_LT(2.0 * small->matmul_params(1) * 32, 5e7);
  const ByteTokenizer tok;
  auto generate = [&](const Model& m, const std::string& prompt, bool adaptive) {
    omp_set_num_threads(2);
    GenerateOptions o;
    o.max_tokens = 4;
    o.stop_at_eos = false;
    o.adaptive_threads = adaptive;
    GenerateResult r = generate_tokens(m, tok, prompt, o, nullptr);
    EXPECT_EQ(omp_get_max_threads(), 2);  // the caller's count is back
    return r;
  };
  const GenerateResult one = generate(*small, "Once upon", true),
                       two = generate(*small, "Once upon", false);
  EXPECT_EQ(one.prefill_threads, 1);
  EXPECT_EQ(two.prefill_threads, 2);
  EXPECT_EQ(one.tokens, two.tokens);
  // Past the few-row kernels' rows too (gemm.h kMaxStreamedRows), whose products the GEMM
  // libraries compute in tiles fixed by their shapes: one thread, the tokens of two.
  ASSERT_LT(2.0 * small->matmul_params(1) * 41, 5e7);
  const GenerateResult long_one = generate(*small, std::string(40, 'a'), true),
                       long_two = generate(*small, std::string(40, 'a'), false);
  EXPECT_EQ(long_one.prefill_threads, 1);
  EXPECT_EQ(long_two.prefill_threads, 2);
  EXPECT_EQ(long_one.tokens, long_two.tokens);
  // A model whose prompt is more work than that: every thread.
  ModelConfig c = small->config();
  c.dim = 512;
  c.n_heads = 8;
  c.n_kv_heads = 8;
  c.ffn_dim = 1536;
  c.n_layers = 4;
  Model large(c);
  large.init_random(5);
  ASSERT_GT(2.0 * large.matmul_params(1) * 10, 5e7);
  EXPECT_EQ(generate(large, "Once upon", true).prefill_threads, 2);
}

}  // namespace
}  // namespace chainlm
