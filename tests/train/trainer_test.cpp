#include "train/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/rng.h"
#include "model/checkpoint.h"
#include "train/lr_schedule.h"
#include "train_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;

ModelConfig small_config(std::vector<int> chains, bool kv_share) {
  ModelConfig c;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv_share ? 1 : 4;
  c.ffn_dim = 176;
  c.vocab_size = 258;
  c.chains = chains;
  c.kv_share = kv_share;
  c.max_seq_len = 64;
  validate_config(c, "test");
  return c;
}

std::string synthetic_text(size_t n, uint64_t seed) {
  static const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "dog ", "ran ", "far ", "\n"};
  Rng rng(seed);
  std::string s;
  while (s.size() < n) s += words[rng.below(10)];
  return s;
}

TrainOptions small_options(const std::string& data, const std::string& out, long steps) {
  TrainOptions o;
  o.data_dir = data;
  o.out_dir = out;
  o.steps = steps;
  o.batch_size = 4;
  o.micro_batch = 2;  // exercises gradient accumulation
  o.seq_len = 32;
  o.lr = 3e-3f;
  o.warmup = 2;
  o.eval_every = 3;
  o.eval_windows = 4;
  o.quiet = true;
  return o;
}

std::map<long, double> losses_by_step(const std::string& run_dir) {
  std::map<long, double> m;
  for (const nlohmann::json& j : test::read_metrics_lines(run_dir))
    if (j.contains("loss")) m[j["step"].get<long>()] = j["loss"].get<double>();
  return m;
}

// In fp32 and in bf16 (whose GEMMs read bf16 copies of the fp32 master weights, remade every
// step: a restored run must remake them from the restored weights).
class TrainerResume : public ::testing::TestWithParam<std::string> {
 protected:
  TrainOptions options(const std::string& data, const std::string& out, long steps) const {
    TrainOptions o = small_options(data, out, steps);
    o.precision = GetParam();
    return o;
  }
};

TEST_P(TrainerResume, ContinuesExactly) {
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  test::make_byte_data_dir(synthetic_text(20000, 1), data, 0.1);
  const ModelConfig c = small_config({1, 1}, true);

  // Uninterrupted: 6 steps.
  Model a(c);
  a.init_random(5);
  Trainer ta(a, options(data, root + "/a", 6));
  ta.run();

  // Interrupted at step 3 (a checkpoint is written there), then resumed in a new trainer.
  {
    Model b(c);
    b.init_random(5);
    Trainer tb(b, options(data, root + "/b", 3));
    tb.run();
  }
  Model b(c);
  b.init_random(999);  // the restore must overwrite every weight
  Trainer tb(b, options(data, root + "/b", 6));
  tb.restore(root + "/b");
  EXPECT_EQ(tb.step(), 3);
  tb.run();

  auto la = losses_by_step(root + "/a"), lb = losses_by_step(root + "/b");
  ASSERT_EQ(la.size(), 6u);
  ASSERT_EQ(lb.size(), 6u);
  for (long s = 1; s <= 6; ++s) EXPECT_EQ(la[s], lb[s]) << "step " << s;
  ASSERT_EQ(a.params().size(), b.params().size());
  EXPECT_EQ(
      0, std::memcmp(a.params().values(), b.params().values(), a.params().size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(Precisions, TrainerResume, ::testing::Values("fp32", "bf16"));

// A bf16 run follows the fp32 run of the same seed within bf16's rounding, and what it saves are
// its fp32 master weights (not bf16-rounded ones), loadable by every fp32 command.
TEST(Trainer, Bf16RunTracksFp32AndSavesFp32MasterWeights) {
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  test::make_byte_data_dir(synthetic_text(20000, 1), data, 0.1);
  const ModelConfig c = small_config({1, 1}, false);
  std::map<long, double> losses[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    Model m(c);
    m.init_random(5);
    TrainOptions o = small_options(data, root + (bf16 ? "/bf16" : "/fp32"), 6);
    o.precision = bf16 ? "bf16" : "fp32";
    Trainer t(m, o);
    t.run();
    losses[bf16] = losses_by_step(o.out_dir);
  }
  ASSERT_EQ(losses[1].size(), 6u);
  bool differs = false;
  for (long s = 1; s <= 6; ++s) {
    // The loss is a mean over many tokens: bf16's per-operand 2^-8 moves it by far less.
    EXPECT_NEAR(losses[1][s], losses[0][s], std::ldexp(losses[0][s], -7)) << "step " << s;
    differs = differs || losses[1][s] != losses[0][s];
  }
  EXPECT_TRUE(differs) << "the bf16 run computed exactly what fp32 did";
  auto saved = load_model(root + "/bf16");
  ASSERT_EQ(saved->precision(), Precision::Fp32);
  size_t not_bf16 = 0;
  for (size_t i = 0; i < saved->params().size(); ++i) {
    const float w = saved->params().values()[i];
    not_bf16 += from_bf16(to_bf16(w)) != w;
  }
  EXPECT_GT(not_bf16, saved->params().size() / 2) << "the checkpoint holds bf16-rounded weights";
}

TEST(Trainer, LearnsRealTextWellBelowUnigramEntropy) {
  const std::string corpus = "/usr/share/games/fortunes/fortunes";
  if (!fs::exists(corpus)) GTEST_SKIP() << corpus << " is missing: run scripts/setup.sh (package fortunes)";
  const std::string text = test::read_text(corpus);
  ASSERT_GT(text.size(), 20000u);
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  test::make_byte_data_dir(text, data, 0.1);
  // Unigram cross-entropy of the validation bytes under the training bytes' distribution:
  // the loss of the best model that ignores context.
  TokenShard train(data + "/train.bin"), val(data + "/val.bin");
  std::vector<double> freq(258, 1.0);  // add-one smoothing
  for (uint64_t i = 0; i < train.size(); ++i) freq[train.at(i)] += 1;
  double total = 0;
  for (double f : freq) total += f;
  double unigram = 0;
  for (uint64_t i = 1; i < val.size(); ++i) unigram -= std::log(freq[val.at(i)] / total);
  unigram /= (val.size() - 1);

  Model m(small_config({1, 1}, true));
  m.init_random(1);
  TrainOptions o = small_options(data, root + "/run", 250);
  o.batch_size = 16;
  o.micro_batch = 0;
  o.seq_len = 64;
  o.eval_every = 0;
  o.eval_windows = 0;  // the whole validation split
  Trainer t(m, o);
  const auto before = t.validate();
  t.run();
  const auto after = t.validate();
  std::printf("unigram %.3f nats; val loss before %.3f, after %.3f (k=1 %.3f)\n", unigram, before[1],
              after[1], after[0]);
  EXPECT_GT(before[1], unigram);  // an untrained model is worse than unigram
  EXPECT_LT(after[1], unigram - 0.6) << "the model should use context, not just byte frequencies";
  EXPECT_LT(after[0], unigram);
}

// A run ending before its learning-rate schedule (--steps lowered on resume) ended near its
// peak with only "--steps 300 -> 60" said (a user trial): a note gives the last step's rate.
TEST(Trainer, ARunEndingBeforeItsScheduleSaysItsLastLearningRate) {
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  test::make_byte_data_dir(synthetic_text(2000, 2), data, 0.2);
  for (const long schedule : {0L, 10L}) {
    Model m(small_config({1}, false));
    m.init_random(3);
    TrainOptions o = small_options(data, root + "/run" + std::to_string(schedule), 2);
    o.lr_schedule_steps = schedule;
    o.warmup = 0;
    ::testing::internal::CaptureStderr();
    Trainer t(m, o);
    const std::string err = ::testing::internal::GetCapturedStderr();
    const float last = cosine_lr(1, 0, 10, o.lr, o.lr * o.min_lr_ratio);
    char expected[256];
    std::snprintf(
        expected, sizeof expected,
        "note: the run ends at step 2, before its learning-rate schedule's end at step 10 "
        "(--lr-schedule-steps, which a resume keeps unless it is given): its last step runs at "
        "%.3g",
        last);
    EXPECT_EQ(err.find(expected) != std::string::npos, schedule == 10) << err;
  }
}

TEST(Trainer, CheckpointHoldsEverythingToReloadTheModel) {
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  test::make_byte_data_dir(synthetic_text(5000, 2), data, 0.2);
  Model m(small_config({1, 2, 1}, false));
  m.init_random(3);
  Trainer t(m, small_options(data, root + "/run", 3));
  t.run();
  const std::string dir = resolve_checkpoint_dir(root + "/run");
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json", "chainlm_tokenizer.json"})
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  auto loaded = load_model(root + "/run");
  EXPECT_EQ(0, std::memcmp(loaded->params().values(), m.params().values(),
                           m.params().size() * sizeof(float)));
}

}  // namespace
}  // namespace chainlm
