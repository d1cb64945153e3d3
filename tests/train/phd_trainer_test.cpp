// A small PHD-CSWA-2-16-32 model trains on real text (SPEC B1-B2 through the trainer).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/token_shard.h"
#include "model/checkpoint.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;

TEST(PhdTrainer, CswaModelLearnsRealText) {
  const std::string corpus = "/usr/share/games/fortunes/fortunes";
  if (!fs::exists(corpus)) GTEST_SKIP() << corpus << " is missing: run scripts/setup.sh (package fortunes)";
  const testing::TempDir tmp;  // removed however the test ends
  const std::string root = tmp.path().string();
  const std::string data = root + "/data";
  test::make_byte_data_dir(test::read_text(corpus), data, 0.1);
  // The loss of the best context-free model: the unigram cross-entropy of the validation bytes.
  TokenShard train(data + "/train.bin"), val(data + "/val.bin");
  std::vector<double> freq(258, 1.0);
  for (uint64_t i = 0; i < train.size(); ++i) freq[train.at(i)] += 1;
  double total = 0, unigram = 0;
  for (double f : freq) total += f;
  for (uint64_t i = 1; i < val.size(); ++i) unigram -= std::log(freq[val.at(i)] / total);
  unigram /= (val.size() - 1);

  ModelConfig c;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.ffn_dim = 176;
  c.vocab_size = 258;
  c.max_seq_len = 64;
  c.phd.repeat = 2;
  c.phd.window = 16;
  c.phd.chunk = 32;
  validate_config(c, "test");
  ASSERT_EQ(c.phd.name(), "PHD-CSWA-2-16-32");
  Model m(c);
  m.init_random(1);
  TrainOptions o;
  o.data_dir = data;
  o.out_dir = root + "/run";
  o.steps = 100;
  o.batch_size = 12;
  o.seq_len = 64;
  o.lr = 3e-3f;
  o.warmup = 10;
  o.eval_every = 0;
  o.eval_windows = 32;
  o.quiet = true;
  Trainer t(m, o);
  const double before = t.validate()[0];
  t.run();
  const double after = t.validate()[0];
  std::printf("PHD-CSWA-2-16-32: unigram %.3f nats; val loss before %.3f, after %.3f\n", unigram,
              before, after);
  EXPECT_TRUE(std::isfinite(after));
  EXPECT_LT(after, before - 2.0) << "the validation loss should fall far below the untrained one";
  EXPECT_LT(after, unigram - 0.5) << "the model should use context, not just byte frequencies";
  // The checkpoint carries the phd section.
  auto loaded = load_model(o.out_dir);
  EXPECT_EQ(loaded->config().phd.name(), "PHD-CSWA-2-16-32");
}

}  // namespace
}  // namespace chainlm
