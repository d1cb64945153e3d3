// Batched decoding steps (infer/batch_decode.h) against each sequence decoded alone: the same
// logits bit for bit, for every model shape (chains, CoLM-Air, GQA, PHD with its K copies per
// sequence, plain CoLM recomputing a cache when its chains grow), with sequences of
// different lengths and sub-models that change between steps, in fp32 (row-major and in
// panels), bf16 and quantized weights, and for more sequences than one pass takes.
#include "infer/batch_decode.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "../model/model_variant.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "weight_forms.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;
using test::variant_name;

using test::Weights;

std::unique_ptr<Model> make_model(const ModelConfig& c, Weights w) {
  return test::make_model(c, w, 5);
}

// Sequence s's sub-model at step t: every sub-model, up and down, differing between sequences.
int chains_at(int s, int t, int n) { return 1 + (s * 5 + t * 3 + t / 2) % n; }

// `sequences` sessions with prompts of different lengths decode `steps` tokens batched, and
// the same sessions alone; every step's logits must be equal bit for bit.
void expect_batch_equals_alone(const Model& model, int sequences, int steps,
                               KvCacheType kv_cache = KvCacheType::Auto, int prompt = 3) {
  const ModelConfig& c = model.config();
  const int V = c.vocab_size, n = c.n_chains();
  std::vector<std::unique_ptr<InferenceSession>> batched, alone;
  std::vector<std::vector<int>> tokens;
  for (int s = 0; s < sequences; ++s) {
    tokens.push_back(random_tokens(prompt + 2 * s + steps, V, 100 + s));
    const std::vector<int> first(tokens[s].begin(), tokens[s].begin() + prompt + 2 * s);
    for (auto* set : {&batched, &alone}) {
      set->push_back(std::make_unique<InferenceSession>(model, 512, kv_cache));
      set->back()->prefill(first, chains_at(s, 0, n));
    }
  }
  BatchDecoder decoder(model);
  for (int t = 1; t <= steps; ++t) {
    std::vector<DecodeRow> rows;
    for (int s = 0; s < sequences; ++s)
      rows.push_back({batched[s].get(), tokens[s][prompt - 1 + 2 * s + t], chains_at(s, t, n)});
    const std::vector<const float*> got = decoder.step(rows);
    ASSERT_EQ(got.size(), rows.size());
    for (int s = 0; s < sequences; ++s) {
      const float* want = alone[s]->decode(rows[s].token, rows[s].chains);
      ASSERT_EQ(std::memcmp(got[s], want, sizeof(float) * V), 0)
          << "sequence " << s << " (chains " << rows[s].chains << ") at step " << t << " of " << sequences;
      ASSERT_EQ(batched[s]->tokens(), alone[s]->tokens());
    }
  }
}

class BatchDecodeVariants : public ::testing::TestWithParam<ModelVariant> {};

TEST_P(BatchDecodeVariants, EveryRowGetsTheLogitsItGetsAlone) {
  const auto model = make_model(GetParam().config(40), Weights::kFp32);
  expect_batch_equals_alone(*model, 5, 6);
}

INSTANTIATE_TEST_SUITE_P(All, BatchDecodeVariants,
                         ::testing::Values(ModelVariant{{1}, false, 0}, ModelVariant{{1}, false, 1},
                                           ModelVariant{{1, 2, 1}, false, 4}, ModelVariant{{1, 2, 1}, true, 2},
                                           ModelVariant{{2, 2, 2, 2}, true, 4}, ModelVariant{{2, 2, 2, 2}, false, 8},
                                           ModelVariant{{1, 1}, true, 2, false, 2, 4, 8},
                                           ModelVariant{{2}, false, 0, true, 3, 0, 0},
                                           ModelVariant{{1, 1, 2}, false, 0, false, 4, 3, 6},
                                           ModelVariant{{1, 2, 1}, true, 2, false, 1, 0, 0, false, true},
                                           ModelVariant{{1, 1}, false, 0, false, 3, 2, 4, false, true}),
                         variant_name);

TEST(BatchDecode, Bf16QuantizedAndPaneledWeightsToo) {
  const ModelConfig c = ModelVariant{{2, 2, 2, 2}, true, 4}.config(40);
  for (Weights w : {Weights::kBf16, Weights::kQ8_0, Weights::kQ4_0, Weights::kFp32Panels}) {
    SCOPED_TRACE((int)w);
    const auto model = make_model(c, w);
    expect_batch_equals_alone(*model, 6, 4);
  }
}

// Bf16 and quantized weights above decode over 16-bit caches (auto); fp32 weights can too.
TEST(BatchDecode, SixteenBitCachesOfFp32Models) {
  for (const ModelVariant& v : {ModelVariant{{1}, false, 1}, ModelVariant{{1, 2, 1}, false, 4},
                                ModelVariant{{2, 2, 2, 2}, true, 4}}) {
    SCOPED_TRACE(::testing::PrintToString(v));
    const auto model = make_model(v.config(40), Weights::kFp32);
    expect_batch_equals_alone(*model, 5, 5, KvCacheType::F16);
  }
}

TEST(BatchDecode, MoreSequencesThanOnePassTakes) {
  const auto model = make_model(ModelVariant{{1, 2, 1}, true, 2}.config(48), Weights::kFp32);
  expect_batch_equals_alone(*model, kMaxDecodeRows * 2 + 3, 3);
}

// Enough sequences and keys that the step spreads the sequences' attention over the threads
// (one parallel region over them; the small cases above stay under the threshold and run it
// sequence by sequence): still every row's bits as alone, ordinary and PHD models.
TEST(BatchDecode, SequencesAttendOnSeveralThreadsWithTheSameBits) {
  const int threads = num_threads();
  set_num_threads(2);
  for (const ModelVariant& v :
       {ModelVariant{{4, 4}}, ModelVariant{{2, 2}, true, 2, false, 2, 4, 8}}) {
    SCOPED_TRACE(::testing::PrintToString(v));
    const auto model = make_model(v.config(160), Weights::kFp32);
    // Keys a step's sequences attend: sum of heads x copies x length x head size must pass
    // kParallelMinWork for the region to open (core/threads.h).
    const int sequences = kMaxDecodeRows / v.K;
    long work = 0;
    for (int s = 0; s < sequences; ++s)
      work += (long)model->config().n_heads * v.K * (70 + 2 * s) *
              (model->config().dim / model->config().n_heads);
    ASSERT_GE(work, kParallelMinWork) << "the case no longer reaches the threaded path";
    expect_batch_equals_alone(*model, sequences, 3, KvCacheType::Auto, 70);
  }
  set_num_threads(threads);
}

// The server decodes on fewer threads than it has while that is faster (infer/decode_threads.h):
// a step gives every row the same bits on one thread as on two, whose products split the output
// columns and the sequences, never a sum. fp32, bf16 and quantized weights.
TEST(BatchDecode, OneThreadAndTwoGiveTheSameBits) {
  const int threads = num_threads();
  for (const ModelVariant& v : {ModelVariant{{4, 4}}, ModelVariant{{2, 2, 2, 2}, true, 4}}) {
    for (Weights w : {Weights::kFp32, Weights::kBf16, Weights::kQ8_0, Weights::kFp32Panels}) {
      SCOPED_TRACE(::testing::PrintToString(v) + " weights " + std::to_string((int)w));
      const auto model = make_model(v.config(64), w);
      const ModelConfig& c = model->config();
      // The q, k and v products of 8 rows are enough work for two threads to split them.
      ASSERT_GE((long)(kMaxDecodeRows * 3.0 * c.dim * c.dim * model->bytes_per_weight()),
                kThreadedWeightBytes);
      std::vector<std::unique_ptr<InferenceSession>> one, two;
      std::vector<DecodeRow> rows_one, rows_two;
      for (int s = 0; s < kMaxDecodeRows; ++s) {
        const int k = chains_at(s, 0, c.n_chains());
        for (auto* set : {&one, &two}) {
          set->push_back(std::make_unique<InferenceSession>(*model, 64));
          set->back()->prefill(random_tokens(3 + s, c.vocab_size, 200 + s), k);
        }
        rows_one.push_back({one.back().get(), 1 + s, k});
        rows_two.push_back({two.back().get(), 1 + s, k});
      }
      BatchDecoder on_one(*model), on_two(*model);
      for (int t = 0; t < 3; ++t) {
        set_num_threads(2);
        const std::vector<const float*> a = on_two.step(rows_two);
        set_num_threads(1);
        const std::vector<const float*> b = on_one.step(rows_one);
        for (int s = 0; s < kMaxDecodeRows; ++s) {
          ASSERT_EQ(std::memcmp(a[s], b[s], sizeof(float) * c.vocab_size), 0)
              << "row " << s << ", step " << t;
          rows_one[s].token = rows_two[s].token = (t * 7 + s) % c.vocab_size;
        }
      }
    }
  }
  set_num_threads(threads);
}

TEST(BatchDecode, BadRowsAreRefusedNamingWhatIsWrong) {
  const auto model = make_model(ModelVariant{{1, 1}, true, 2}.config(8), Weights::kFp32);
  InferenceSession s(*model);
  s.prefill({1, 2}, 1);
  BatchDecoder decoder(*model);
  auto message = [&](DecodeRow row) {
    try {
      decoder.step({row});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message({&s, 1, 3}).find("active chains 3 is outside 1..2"), std::string::npos);
  EXPECT_NE(message({&s, 999, 1}).find("token id 999"), std::string::npos);
  EXPECT_EQ(s.length(), 2);  // nothing was appended
  Model other(model->config());
  InferenceSession foreign(other);
  foreign.prefill({1}, 1);
  EXPECT_NE(message({&foreign, 1, 1}).find("another model"), std::string::npos);
  for (int t = 0; t < 6; ++t) decoder.step({{&s, 3, 2}});
  EXPECT_NE(message({&s, 1, 1}).find("longer than the model's max_seq_len 8"), std::string::npos);
}

}  // namespace
}  // namespace chainlm
