// Chain tuning (SPEC A7) and the multi-chain objective (SPEC A5) through the trainer: frozen
// parameters stay bit-identical (and so does CoLM-Air's KV cache), freezing survives resume,
// and fine-tuning with every sub-model weighted makes every sub-model better.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/rng.h"
#include "infer/session.h"
#include "io/atomic_file.h"
#include "model/checkpoint.h"
#include "model/expand.h"
#include "train/trainer.h"
#include "../model/model_test_util.h"
#include "train_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;

std::string synthetic_text(size_t n, uint64_t seed) {
  static const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "dog ", "ran ", "far ", "\n",
                                "big ", "red ", "sun ", "was ", "hot. "};
  Rng rng(seed);
  std::string s;
  std::string prev = "the ";
  while (s.size() < n) {
    // A little structure beyond unigrams: "the" is mostly followed by a noun.
    const std::string w = prev == "the " && rng.uniform() < 0.8f ? std::string(rng.below(2) ? "cat " : "dog ")
                                                                 : std::string(words[rng.below(15)]);
    s += w;
    prev = w;
  }
  return s;
}

class ChainTuning : public ::testing::Test {
 protected:
  void SetUp() override {
    root = tmp.path().string();
    data = root + "/data";
    test::make_byte_data_dir(synthetic_text(30000, 1), data, 0.1);
  }
  testing::TempDir tmp;

  // A trained-looking 1-chain base (byte vocabulary), expanded by one chain.
  std::unique_ptr<Model> expanded_model(bool kv_share) {
    ModelConfig c;
    c.dim = 32;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 48;
    c.n_layers = 2;
    c.vocab_size = 258;
    c.max_seq_len = 64;
    c.tie_embeddings = true;  // untied by the expansion
    Model base(c);
    base.init_random(2);
    return expand_model(base, ExpandOptions{{4}, kv_share, 3});
  }

  TrainOptions options(const std::string& out, long steps) {
    TrainOptions o;
    o.data_dir = data;
    o.out_dir = out;
    o.steps = steps;
    o.batch_size = 4;
    o.micro_batch = 2;
    o.seq_len = 32;
    o.lr = 1e-2f;  // large, so that anything not frozen visibly moves
    o.warmup = 1;
    o.weight_decay = 0.1f;
    o.eval_every = 3;
    o.eval_windows = 4;
    o.quiet = true;
    return o;
  }

  std::string root, data;
};

// Every element of `after` equals `before` where frozen (or unused: a chain past every weighted
// sub-model), and most trainable elements moved.
void expect_frozen_unchanged(const Model& before, const Model& after) {
  const ParamStore& a = before.params();
  const ParamStore& b = after.params();
  ASSERT_EQ(a.size(), b.size());
  size_t trainable = 0, moved = 0;
  for (const ParamInfo& p : b.infos()) {
    const float* va = a.value(a.find(p.name));
    const float* vb = b.values() + p.offset;
    for (size_t e = 0; e < p.numel(); ++e) {
      const int64_t col = (int64_t)(e % p.cols());
      if (col < p.frozen_cols || col >= p.cols() - p.unused_cols) {
        ASSERT_EQ(0, std::memcmp(va + e, vb + e, sizeof(float)))
            << "frozen or unused " << p.name << "[" << e << "] changed: " << va[e] << " -> "
            << vb[e];
      } else {
        ++trainable;
        moved += va[e] != vb[e];
      }
    }
  }
  EXPECT_GT(trainable, 0u);
  EXPECT_GT(moved, trainable * 9 / 10) << "the trainable parameters barely moved";
}

TEST_F(ChainTuning, FrozenChainStaysBitIdenticalAndAirKvCacheToo) {
  for (bool kv_share : {true, false}) {
    auto original = expanded_model(kv_share);
    auto tuned = expanded_model(kv_share);
    TrainOptions o = options(root + (kv_share ? "/air" : "/colm"), 6);
    o.freeze_chains = 1;
    Trainer t(*tuned, o);
    EXPECT_NEAR(t.trainable_fraction(), (double)tuned->params().trainable_numel() / tuned->params().numel(), 1e-12);
    EXPECT_LT(t.trainable_fraction(), 0.8);
    t.run();
    expect_frozen_unchanged(*original, *tuned);
    // Every tensor of chain 1 (and, for Air, the shared wk/wv) is frozen whole.
    for (const ParamInfo& p : tuned->params().infos()) {
      if (p.chain == 0) {
        EXPECT_TRUE(p.frozen()) << p.name;
      }
    }
    // Sub-model 1 is still the original model, bit for bit.
    auto tokens = test::random_tokens(20, 258, 5);
    std::vector<float> la(20 * 258), lb(20 * 258);
    original->logits(tokens.data(), 1, 20, 1, la.data());
    tuned->logits(tokens.data(), 1, 20, 1, lb.data());
    EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
    if (!kv_share) continue;
    // CoLM-Air: the KV cache depends on chain 1 only, so the tuned model's cache of a prompt
    // is the original's, bit for bit, whichever way it is prefilled.
    for (bool chain1_prefill : {true, false}) {
      InferenceSession so(*original), st(*tuned);
      so.prefill(tokens, 2, chain1_prefill);
      st.prefill(tokens, 2, chain1_prefill);
      const KVCache& co = so.cache();
      const KVCache& ct = st.cache();
      ASSERT_EQ(co.width, ct.width);
      for (int l = 0; l < co.n_layers; ++l) {
        const size_t off = (size_t)l * co.capacity * co.width, n = tokens.size() * co.width;
        EXPECT_EQ(0, std::memcmp(co.k.data() + off, ct.k.data() + off, n * sizeof(float))) << "layer " << l;
        EXPECT_EQ(0, std::memcmp(co.v.data() + off, ct.v.data() + off, n * sizeof(float))) << "layer " << l;
      }
      // ... while the tuned model's next-token distribution did change.
      const float* lo = so.decode(9, 2);
      const std::vector<float> lo_copy(lo, lo + 258);
      const float* lt = st.decode(9, 2);
      EXPECT_NE(0, std::memcmp(lo_copy.data(), lt, 258 * sizeof(float)));
    }
  }
}

// A chain past the last sub-model with a loss weight is never computed: it gets no gradient, and
// AdamW's weight decay does not shrink it either (nor its embedding, norm and head columns), as
// with frozen chains; the trainable count leaves it out.
TEST_F(ChainTuning, ChainsPastTheLastWeightedSubModelStayBitIdentical) {
  for (const std::string train_only : {"", "head"}) {
    auto original = expanded_model(false);
    auto tuned = expanded_model(false);
    TrainOptions o = options(root + "/unused" + train_only, 4);
    o.chain_loss_weights = {1.0f, 0.0f};
    o.train_only = train_only;
    o.weight_decay = 0.5f;  // what would shrink chain 2 visibly in a few steps
    Trainer t(*tuned, o);
    EXPECT_LT(t.trainable_fraction(), 0.8) << train_only;
    t.run();
    expect_frozen_unchanged(*original, *tuned);
    bool unused_block = false;
    for (const ParamInfo& p : tuned->params().infos()) {
      unused_block = unused_block || (p.chain == 1 && p.unused_cols == p.cols());
      if (p.chain < 0 && !p.frozen()) {
        EXPECT_EQ(p.unused_cols, p.cols() - tuned->layout().dim.prefix(1)) << p.name;
      }
    }
    EXPECT_EQ(unused_block, train_only.empty());  // head-only: chain 2's blocks are frozen already
  }
}

TEST_F(ChainTuning, FreezingIsRecordedAndSurvivesResume) {
  TrainOptions o = options(root + "/a", 6);
  o.freeze_chains = 1;
  o.warmup = 2;  // the learning rates of steps 1..3 then do not depend on the run's length
  // Uninterrupted.
  auto a = expanded_model(true);
  auto original = expanded_model(true);
  Trainer ta(*a, o);
  ta.run();
  // Interrupted at step 3, resumed by a trainer built from the saved options alone.
  {
    auto b = expanded_model(true);
    TrainOptions ob = o;
    ob.out_dir = root + "/b";
    ob.steps = 3;
    ob.lr_schedule_steps = 6;  // a 6-step run, stopped at step 3
    Trainer tb(*b, ob);
    tb.run();
  }
  const std::string ckpt = resolve_checkpoint_dir(root + "/b");
  const auto state = nlohmann::json::parse(read_file(ckpt + "/trainer_state.json"));
  EXPECT_EQ(state["options"]["freeze_chains"], 1);
  EXPECT_NEAR(state["trainable_fraction"].get<double>(), ta.trainable_fraction(), 1e-12);
  auto b = load_model(root + "/b");
  TrainOptions resumed = TrainOptions::from_json(state["options"]);
  resumed.out_dir = root + "/b";
  resumed.steps = 6;
  resumed.quiet = true;
  Trainer tb(*b, resumed);
  tb.restore(root + "/b");
  tb.run();
  EXPECT_EQ(0, std::memcmp(a->params().values(), b->params().values(), a->params().size() * sizeof(float)));
  expect_frozen_unchanged(*original, *b);
  // metrics.jsonl opens with the trainable fraction.
  const nlohmann::json j = test::read_metrics_lines(root + "/a").at(0);
  EXPECT_EQ(j["step"], 0);
  EXPECT_NEAR(j["trainable_fraction"].get<double>(), ta.trainable_fraction(), 1e-12);
  EXPECT_EQ(j["total_params"].get<size_t>(), a->params().numel());
}

TEST_F(ChainTuning, HeadOnlyTrainsOnlyTheHead) {
  auto original = expanded_model(true);
  auto tuned = expanded_model(true);
  TrainOptions o = options(root + "/head", 4);
  o.train_only = "head";
  o.chain_loss_weights = {1.0f, 1.0f};
  Trainer t(*tuned, o);
  EXPECT_NEAR(t.trainable_fraction(),
              (double)tuned->config().vocab_size * tuned->config().dim / tuned->params().numel(), 1e-12);
  t.run();
  expect_frozen_unchanged(*original, *tuned);
  for (const ParamInfo& p : tuned->params().infos()) EXPECT_EQ(p.frozen(), p.name != "output.weight") << p.name;
}

TEST_F(ChainTuning, RejectsImpossibleFreezing) {
  auto m = expanded_model(true);
  auto expect_error = [&](TrainOptions o, const std::string& needle) {
    try {
      Trainer t(*m, o);
      ADD_FAILURE() << "accepted; expected '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TrainOptions o = options(root + "/bad", 2);
  o.freeze_chains = 2;
  expect_error(o, "at most 1 can be frozen");
  o.freeze_chains = 5;
  expect_error(o, "at most 1 can be frozen");
  o.freeze_chains = 1;
  o.train_only = "head";
  expect_error(o, "exclude each other");
  o.train_only = "norms";
  o.freeze_chains = 0;
  expect_error(o, "the only choice is 'head'");
  o.train_only.clear();
  o.freeze_chains = 1;
  o.chain_loss_weights = {1.0f, 0.0f};
  expect_error(o, "nothing would train");
}

// SPEC A5: fine-tuning a pre-trained model with every sub-model weighted makes every sub-model
// better than it was, and every proper sub-model better than the same budget of
// full-model-only fine-tuning does; the full model itself ends up as good either way (its
// loss term has a third of the weight, but the lower chains it reads train harder).
TEST_F(ChainTuning, UniformChainWeightsImproveEverySubModel) {
  ModelConfig c;
  c.dim = 48;
  c.n_heads = 3;
  c.n_kv_heads = 1;
  c.ffn_dim = 96;
  c.n_layers = 2;
  c.vocab_size = 258;
  c.max_seq_len = 64;
  c.chains = {1, 1, 1};
  c.kv_share = true;
  validate_config(c, "test");
  auto make = [&]() {
    auto m = std::make_unique<Model>(c);
    m->init_random(4);
    return m;
  };
  // Pre-training with the default objective: only the full model is trained.
  auto pre = make();
  TrainOptions po = options(root + "/pre", 80);
  po.lr = 3e-3f;
  po.eval_every = 0;
  po.eval_windows = 0;
  Trainer tp(*pre, po);
  tp.run();
  const auto before = tp.validate();
  auto finetune = [&](const std::vector<float>& weights, const std::string& name) {
    auto m = make();
    std::memcpy(m->params().values(), pre->params().values(), sizeof(float) * pre->params().size());
    TrainOptions o = options(root + "/" + name, 60);
    o.lr = 3e-3f;
    o.warmup = 5;
    o.eval_every = 0;
    o.eval_windows = 0;
    o.chain_loss_weights = weights;
    Trainer t(*m, o);
    t.run();
    return t.validate();
  };
  const auto uniform = finetune({1, 1, 1}, "uniform");
  const auto full_only = finetune({0, 0, 1}, "full");
  for (int k = 0; k < 3; ++k)
    std::printf("k=%d: pre-trained %.3f | uniform %.3f | full-only %.3f\n", k + 1, before[k], uniform[k], full_only[k]);
  for (int k = 0; k < 3; ++k) EXPECT_LT(uniform[k], before[k]) << "sub-model " << k + 1 << " did not improve";
  for (int k = 0; k < 2; ++k) EXPECT_LT(uniform[k], full_only[k] - 0.05) << "sub-model " << k + 1;
  // The full model barely loses: 0.023 nats with the batches keyed by global row (issue 6),
  // under 0.02 with the earlier draw; 60 steps of 4x32-token batches are that noisy.
  EXPECT_LT(uniform[2], full_only[2] + 0.05) << "the full model";
  // The sub-models the default objective never trains directly gain the most.
  EXPECT_LT(uniform[0], full_only[0] - 0.2);
}

}  // namespace
}  // namespace chainlm
