// Quantized models (docs/quantization.md): every weight matrix goes through its blocks, sub-model
// evaluation agrees with per-sub-model logits whether or not chains start on a block boundary,
// checkpoints round-trip bit for bit, and what a quantized model cannot do is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

using testing::TempDir;

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  return d;
}

std::vector<float> logits_of(Model& m, const std::vector<int>& tokens, int k) {
  std::vector<float> out(tokens.size() * (size_t)m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), k, out.data());
  return out;
}

// A model of dim 64 in two chains of 32: chain boundaries on block boundaries.
ModelConfig aligned_config() {
  ModelConfig c = test::tiny_config({1, 1}, false);
  c.dim = 64;
  c.ffn_dim = 64;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.vocab_size = 40;
  validate_config(c, "test");
  return c;
}

TEST(QuantizedModel, EveryMatrixGoesThroughItsBlocks) {
  // Chains of 16 (not block aligned: Q4_0 models keep them in Q8_0, the tables in fp32) and of
  // 32.
  for (const ModelConfig& c : {test::tiny_config({1, 1}, false), aligned_config()})
  for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    Model fp32(c);
    fp32.init_random(3);
    Model q(c);
    q.copy_weights_from(fp32);
    q.quantize_weights(t);
    EXPECT_EQ(q.weight_format(), quant_type_name(t));
    // Rows of 16 pad to a block of 32: Q8_0 is then 34 bytes per 16 weights, still under half.
    EXPECT_LT(q.weight_bytes(), fp32.weight_bytes() / 1.5);
    // The fp32 model holding exactly the dequantized weights.
    Model deq(c);
    deq.copy_weights_from(fp32);
    const ParamStore& ps = q.params();
    for (int i = 0; i < (int)ps.infos().size(); ++i) {
      const ParamInfo& p = ps.info(i);
      const bool table = p.name == "tok_embeddings.weight" || p.name == "output.weight";
      // Tables across unaligned chain boundaries stay fp32 (SubModelsNeverDependOnLaterChains).
      EXPECT_EQ(q.is_quantized(i), p.shape.size() == 2 && !(table && c.dim == 32)) << p.name;
      if (!q.is_quantized(i)) continue;
      // Q4_0 models keep the embedding, the head, and matrices whose rows are not whole
      // blocks in Q8_0.
      const QuantType tt = q.tensor_quant_type(i);
      const bool partial = p.shape[1] % kQuantBlock != 0;
      EXPECT_EQ(tt, (table || partial) && t == QuantType::kQ4_0 ? QuantType::kQ8_0 : t) << p.name;
      const size_t row = quant_row_bytes(tt, p.shape[1]);
      for (int64_t r = 0; r < p.shape[0]; ++r)
        dequantize_row(tt, q.quantized_blocks(i) + r * row, p.shape[1], deq.params().value(i) + r * p.shape[1]);
    }
    const auto tokens = test::random_tokens(12, c.vocab_size, 5);
    for (int k = 1; k <= 2; ++k) {
      const auto lq = logits_of(q, tokens, k), ld = logits_of(deq, tokens, k),
                 lf = logits_of(fp32, tokens, k);
      double scale = 0;
      for (float v : lf) scale = std::max(scale, (double)std::fabs(v));
      // Against the dequantized weights only the activations' Q8_0 rounding remains (2^-8 of
      // each block's largest value): a small fraction of the logits' scale.
      EXPECT_LT(max_abs_diff(lq, ld), 0.03 * scale) << quant_type_name(t) << " k=" << k;
      if (t == QuantType::kQ4_0) {
        EXPECT_LT(max_abs_diff(lq, ld), max_abs_diff(lq, lf))
            << "k=" << k;  // the weights' rounding dominates
      }
    }
  }
}

// Q4_0's scale search weighs each input column by the squared gain of the RMSNorm feeding the
// matrix (model_quant.cpp): the attention norm for wq/wk/wv (CoLM-Air's shared K/V too), the
// FFN norm for w1/w3, the final norm for an untied head; nothing for wo, w2, the embedding.
TEST(QuantizedModel, ImportanceIsTheFeedingNormsGainsSquared) {
  for (bool air : {false, true}) {
    const ModelConfig c = test::tiny_config({1, 1}, air, air ? 2 : 0);
    Model m(c);
    m.init_random(4);
    ParamStore& ps = m.params();
    // Distinct gains per norm, so a matrix given the wrong norm's gains shows.
    for (int i = 0; i < (int)ps.infos().size(); ++i)
      if (ps.info(i).shape.size() == 1)
        for (int64_t e = 0; e < ps.info(i).shape[0]; ++e) ps.value(i)[e] = 0.5f + 0.01f * (float)(7 * i + e);
    for (int i = 0; i < (int)ps.infos().size(); ++i) {
      const ParamInfo& p = ps.info(i);
      if (p.shape.size() != 2) continue;
      const std::string& n = p.name;
      std::string norm;
      const std::string layer = n.substr(0, n.find('.', n.find('.') + 1));  // "layers.L"
      if (n.find(".wq.") != std::string::npos || n.find(".wk.") != std::string::npos ||
          n.find(".wv.") != std::string::npos)
        norm = layer + ".attention_norm.weight";
      else if (n.find(".w1.") != std::string::npos || n.find(".w3.") != std::string::npos)
        norm = layer + ".ffn_norm.weight";
      else if (n == "output.weight")
        norm = "norm.weight";
      const std::vector<float> w = m.quant_importance(i);
      if (norm.empty()) {
        EXPECT_TRUE(w.empty()) << n;
        continue;
      }
      const float* g = ps.value(ps.find(norm));
      ASSERT_EQ((int64_t)w.size(), p.shape[1]) << n;
      for (int64_t e = 0; e < p.shape[1]; ++e) ASSERT_EQ(w[e], g[e] * g[e]) << n << " column " << e;
    }
  }
}

// evaluate() sums per-sub-model cross entropies; with a quantized head it cannot start a GEMM
// inside a block, so unaligned chains take whole-prefix products. Both must equal the cross
// entropy of logits(k).
TEST(QuantizedModel, EvaluateAgreesWithLogitsAlignedOrNot) {
  for (const ModelConfig& c : {test::tiny_config({1, 1}, false), aligned_config()}) {
    Model q(c);
    q.init_random(4);
    q.quantize_weights(QuantType::kQ8_0);
    const int T = 10;
    const auto tokens = test::random_tokens(T, c.vocab_size, 6);
    const auto targets = test::random_tokens(T, c.vocab_size, 7);
    const std::vector<double> sums = q.evaluate(tokens.data(), targets.data(), 1, T, 2, nullptr);
    for (int k = 1; k <= 2; ++k) {
      const auto l = logits_of(q, tokens, k);
      double ce = 0;
      for (int t = 0; t < T; ++t) {
        double mx = -1e30, s = 0;
        for (int v = 0; v < c.vocab_size; ++v) mx = std::max(mx, (double)l[t * c.vocab_size + v]);
        for (int v = 0; v < c.vocab_size; ++v) s += std::exp(l[t * c.vocab_size + v] - mx);
        ce += mx + std::log(s) - l[t * c.vocab_size + targets[t]];
      }
      EXPECT_NEAR(sums[k - 1], ce, 1e-4 * ce) << "dim " << c.dim << " k=" << k;
    }
  }
}

// The embedding and the head span every chain: in 32-weight blocks across a chain boundary
// (chains of 16 here, of 40 in a user's trial), chain 2's weights set chain 1's scales, so a
// quantized sub-model 1 moved as a tuned chain 2 trained, and `quantize --chains 1` gave other
// logits than sub-model 1. Such tables stay fp32; aligned ones are quantized within a chain.
TEST(QuantizedModel, SubModelsNeverDependOnLaterChains) {
  for (const ModelConfig& c :
       {test::tiny_config({1, 1}, false), test::tiny_config({1, 1}, true, 2), aligned_config()}) {
    EXPECT_EQ(quantized_tables_straddle_chains(c), c.dim == 32) << c.dim;
    for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
      Model a(c), b(c);
      test::randomize_trained_like(a, 5);
      b.copy_weights_from(a);
      const int d1 = a.layout().dim.prefix(1);
      for (const char* name : {"tok_embeddings.weight", "output.weight"}) {
        const int i = b.params().find(name);
        ASSERT_GE(i, 0) << name;
        float* w = b.params().value(i);
        for (int r = 0; r < c.vocab_size; ++r)
          for (int col = d1; col < c.dim; ++col) w[(size_t)r * c.dim + col] *= 3.0f;  // chain 2
      }
      a.quantize_weights(type);
      b.quantize_weights(type);
      const auto tokens = test::random_tokens(9, c.vocab_size, 3);
      EXPECT_EQ(logits_of(a, tokens, 1), logits_of(b, tokens, 1)) << "dim " << c.dim;
      EXPECT_NE(logits_of(a, tokens, 2), logits_of(b, tokens, 2)) << "dim " << c.dim;
      for (const char* name : {"tok_embeddings.weight", "output.weight"})
        EXPECT_EQ(a.is_quantized(a.params().find(name)), c.dim != 32) << name;
    }
  }
}

TEST(QuantizedModel, CheckpointRoundTripsBitForBit) {
  TempDir dir;
  const ModelConfig c = test::tiny_config({1, 1}, true, 2);
  Model q(c);
  q.init_random(8);
  q.quantize_weights(QuantType::kQ4_0);
  save_model(q, dir.file("q"));
  auto back = load_model(dir.file("q"));
  ASSERT_TRUE(back->quantized());
  EXPECT_EQ(back->quant_type(), QuantType::kQ4_0);
  EXPECT_EQ(back->weight_bytes(), q.weight_bytes());
  const auto tokens = test::random_tokens(9, c.vocab_size, 2);
  for (int k = 1; k <= 2; ++k) EXPECT_EQ(logits_of(q, tokens, k), logits_of(*back, tokens, k)) << k;

  // A block scale that is not finite is refused naming the tensor (the file's checksum holds:
  // the blocks were that way when saved).
  int victim = -1;
  for (int i = 0; i < (int)q.params().infos().size() && victim < 0; ++i)
    if (q.is_quantized(i)) victim = i;
  auto* blocks = const_cast<uint8_t*>(q.quantized_blocks(victim));
  blocks[0] = 0x00;
  blocks[1] = 0x7e;  // fp16 NaN
  save_model(q, dir.file("bad"));
  try {
    load_model(dir.file("bad"));
    FAIL() << "a NaN block scale was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'" + q.params().info(victim).name +
                                         "' has a non-finite block scale"),
              std::string::npos)
        << e.what();
  }
}

TEST(QuantizedModel, RefusesWhatItCannotDo) {
  Model q(test::tiny_config({1, 1}, false));
  q.init_random(1);
  q.quantize_weights(QuantType::kQ8_0);
  EXPECT_THROW(q.quantize_weights(QuantType::kQ4_0), Error);
  EXPECT_THROW(q.use_bf16_weights(false), Error);
  EXPECT_THROW(q.ensure_grads(), Error);
  Model bf(test::tiny_config({1, 1}, false));
  bf.init_random(1);
  bf.use_bf16_weights(false);
  EXPECT_THROW(bf.quantize_weights(QuantType::kQ8_0), Error);
}

}  // namespace
}  // namespace chainlm
