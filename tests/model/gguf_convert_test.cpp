// GGUF export and import (model/gguf_convert.h): llama.cpp's LLaMA names and shapes, f32 round
// trips bit for bit, f16 holds the weights rounded to half, q8_0/q4_0 hold exactly the blocks
// `chainlm quantize` makes (and a quantized model's own blocks), the 1-chain sub-model of a CoLM
// model, the SentencePiece tokenizer inside, and what cannot be written or read.
#include "model/gguf_convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/test_temp_dir.h"
#include "io/tokenizer.h"
#include "kernels/quant.h"
#include "model/checkpoint.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using test::random_tokens;
using testing::TempDir;

// Rows of 64 and 96 (by default): whole 32-blocks everywhere.
ModelConfig llama_config(bool tie, int dim = 64) { return test::llama_config(tie, dim, 96, 4); }
void randomize(Model& m, uint64_t seed) { test::randomize_trained_like(m, seed); }

std::vector<float> logits_of(Model& m, int k, const std::vector<int>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), k, out.data());
  return out;
}

GgufExportOptions options(const std::string& type, int chains = 1) {
  return {.chains = chains, .type = type, .tokenizer = "", .name = "test", .chat_template = ""};
}

using test::error_of;

TEST(GgufConvert, LlamaCppNamesShapesAndMetadata) {
  TempDir dir;
  Model m(llama_config(false));
  randomize(m, 1);
  const GgufExportSummary s = export_gguf(m, options(""), dir.file("m.gguf"));
  EXPECT_EQ(s.file_type, "f32");
  EXPECT_EQ(s.tensors, 2 + 2 * 9 + 1);
  GgufReader g(dir.file("m.gguf"));
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_uint("general.file_type"), 0u);
  EXPECT_EQ(g.get_uint("llama.embedding_length"), 64u);
  EXPECT_EQ(g.get_uint("llama.block_count"), 2u);
  EXPECT_EQ(g.get_uint("llama.feed_forward_length"), 96u);
  EXPECT_EQ(g.get_uint("llama.attention.head_count"), 4u);
  EXPECT_EQ(g.get_uint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(g.get_uint("llama.rope.dimension_count"), 16u);
  EXPECT_EQ(g.get_uint("llama.context_length"), 32u);
  EXPECT_EQ(g.get_float("llama.rope.freq_base"), 500000.0f);
  EXPECT_EQ(g.get_float("llama.attention.layer_norm_rms_epsilon"), 1e-6f);
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "no_vocab");
  // llama.cpp's LLaMA tensor names (llama-arch.cpp), dimensions innermost first.
  const std::vector<std::pair<std::string, std::vector<uint64_t>>> expected = {
      {"token_embd.weight", {64, 37}},       {"output_norm.weight", {64}},
      {"output.weight", {64, 37}},           {"blk.1.attn_norm.weight", {64}},
      {"blk.1.attn_q.weight", {64, 64}},     {"blk.1.attn_k.weight", {64, 32}},
      {"blk.1.attn_v.weight", {64, 32}},     {"blk.1.attn_output.weight", {64, 64}},
      {"blk.1.ffn_norm.weight", {64}},       {"blk.1.ffn_gate.weight", {64, 96}},
      {"blk.1.ffn_up.weight", {64, 96}},     {"blk.1.ffn_down.weight", {96, 64}}};
  for (const auto& [name, ne] : expected) {
    const GgufTensorInfo* t = g.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->ne, ne) << name;
    EXPECT_EQ(t->type, kGgmlF32) << name;
  }
  // q and k rows are chainlm's adjacent RoPE pairs, llama.cpp's layout: copied as they are.
  const int wq = m.params().find("layers.1.attention.wq.chain0.weight");
  EXPECT_EQ(0, std::memcmp(g.data(*g.find("blk.1.attn_q.weight")), m.params().value(wq), 64 * 64 * 4));
}

TEST(GgufConvert, F32RoundTripIsBitExact) {
  for (bool tie : {false, true}) {
    TempDir dir;
    Model m(llama_config(tie, 48));  // rows of 48: F32 needs no blocks
    randomize(m, 3);
    export_gguf(m, options("f32"), dir.file("m.gguf"));
    EXPECT_EQ(GgufReader(dir.file("m.gguf")).find("output.weight") == nullptr, tie);
    auto back = load_model(dir.file("m.gguf"));  // by content, as every command loads
    EXPECT_EQ(back->config().tie_embeddings, tie);
    ASSERT_EQ(back->params().size(), m.params().size());
    EXPECT_EQ(0, std::memcmp(back->params().values(), m.params().values(), m.params().size() * sizeof(float)));
    const auto tokens = random_tokens(20, 37, 4);
    EXPECT_EQ(logits_of(*back, 1, tokens), logits_of(m, 1, tokens));
  }
}

TEST(GgufConvert, F16HoldsTheWeightsRoundedToHalf) {
  TempDir dir;
  Model m(llama_config(false));
  randomize(m, 5);
  export_gguf(m, options("f16"), dir.file("m.gguf"));
  GgufReader g(dir.file("m.gguf"));
  EXPECT_EQ(g.get_uint("general.file_type"), 1u);
  EXPECT_EQ(g.find("blk.0.ffn_up.weight")->type, kGgmlF16);
  EXPECT_EQ(g.find("blk.0.ffn_norm.weight")->type, kGgmlF32);  // gains stay F32
  auto back = load_model(dir.file("m.gguf"));
  for (size_t i = 0; i < m.params().infos().size(); ++i) {
    const ParamInfo& p = m.params().info((int)i);
    for (size_t e = 0; e < p.numel(); ++e) {
      const float w = m.params().value((int)i)[e];
      const float expect = p.shape.size() == 1 ? w : float_from_fp16(fp16_from_float(w));
      ASSERT_EQ(back->params().value((int)i)[e], expect) << p.name << "[" << e << "]";
    }
  }
}

TEST(GgufConvert, QuantizedTypesHoldChainlmsBlocks) {
  for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    TempDir dir;
    Model m(llama_config(false));
    randomize(m, 7);
    Model q(m.config());
    q.copy_weights_from(m);
    q.quantize_weights(t);
    // From the fp32 model with --type, and from the quantized model (its blocks copied).
    const GgufExportSummary from_fp32 = export_gguf(m, options(quant_type_name(t)), dir.file("a.gguf"));
    const GgufExportSummary from_q = export_gguf(q, options(""), dir.file("b.gguf"));
    EXPECT_FALSE(from_fp32.copied_blocks);
    EXPECT_TRUE(from_q.copied_blocks);
    EXPECT_EQ(from_q.file_type, quant_type_name(t));
    EXPECT_EQ(testing::read_bytes(dir.file("a.gguf")), testing::read_bytes(dir.file("b.gguf")));
    GgufReader g(dir.file("a.gguf"));
    EXPECT_EQ(g.get_uint("general.file_type"), t == QuantType::kQ8_0 ? 7u : 2u);
    const uint32_t blocks = t == QuantType::kQ8_0 ? kGgmlQ8_0 : kGgmlQ4_0;
    EXPECT_EQ(g.find("blk.0.attn_q.weight")->type, blocks);
    // With q4_0 the tables stay Q8_0, as chainlm quantize keeps them.
    EXPECT_EQ(g.find("token_embd.weight")->type, kGgmlQ8_0);
    EXPECT_EQ(g.find("output.weight")->type, kGgmlQ8_0);
    const int wq = q.params().find("layers.0.attention.wq.chain0.weight");
    EXPECT_EQ(0, std::memcmp(g.data(*g.find("blk.0.attn_q.weight")), q.quantized_blocks(wq),
                             64 * quant_row_bytes(t, 64)));
    auto back = load_model(dir.file("a.gguf"));
    EXPECT_EQ(back->weight_format(), quant_type_name(t));
    EXPECT_EQ(back->weight_bytes(), q.weight_bytes());
    const auto tokens = random_tokens(20, 37, 8);
    EXPECT_EQ(logits_of(*back, 1, tokens), logits_of(q, 1, tokens));
    // Exporting a quantized GGUF again copies the same blocks.
    export_gguf(*back, options(""), dir.file("c.gguf"));
    EXPECT_EQ(testing::read_bytes(dir.file("a.gguf")), testing::read_bytes(dir.file("c.gguf")));
  }
}

TEST(GgufConvert, RowsThatAreNotWholeBlocksFallBack) {
  TempDir dir;
  Model m(llama_config(false, 48));  // rows of 48 cannot be block-quantized in GGUF
  randomize(m, 9);
  const GgufExportSummary s = export_gguf(m, options("q8_0"), dir.file("a.gguf"));
  EXPECT_GT(s.fallback_tensors, 0);
  GgufReader g(dir.file("a.gguf"));
  EXPECT_EQ(g.find("blk.0.attn_q.weight")->type, kGgmlF16);   // from fp32: F16, as llama.cpp does
  EXPECT_EQ(g.find("blk.0.ffn_down.weight")->type, kGgmlQ8_0);  // rows of 96: blocks
  // From a quantized model the fallback is F32 holding its exact dequantized weights (the
  // quantized model rounds the activations of those products to 8 bits; the F32 ones do not).
  Model q(m.config());
  q.copy_weights_from(m);
  q.quantize_weights(QuantType::kQ8_0);
  export_gguf(q, options(""), dir.file("b.gguf"));
  GgufReader gb(dir.file("b.gguf"));
  EXPECT_EQ(gb.find("blk.0.attn_q.weight")->type, kGgmlF32);
  auto back = load_model(dir.file("b.gguf"));
  const int wq = back->params().find("layers.0.attention.wq.chain0.weight");
  EXPECT_FALSE(back->is_quantized(wq));  // held in fp32 inside a quantized model
  EXPECT_TRUE(back->quantized());
  const auto& info = q.params().info(wq);
  std::vector<float> dequantized(info.numel());
  const size_t row = quant_row_bytes(QuantType::kQ8_0, info.shape[1]);
  for (int64_t r = 0; r < info.shape[0]; ++r)
    dequantize_row(QuantType::kQ8_0, q.quantized_blocks(wq) + r * row, info.shape[1],
                   dequantized.data() + r * info.shape[1]);
  EXPECT_EQ(std::vector<float>(back->params().value(wq), back->params().value(wq) + info.numel()), dequantized);
  const auto tokens = random_tokens(16, 37, 10);
  const auto lq = logits_of(q, 1, tokens), lb = logits_of(*back, 1, tokens);
  double scale = 0, diff = 0;
  for (size_t i = 0; i < lq.size(); ++i) {
    scale = std::max(scale, (double)std::fabs(lq[i]));
    diff = std::max(diff, (double)std::fabs(lq[i] - lb[i]));
  }
  // Only the activations' 8-bit rounding in q's products differs (the weights are equal, above);
  // through four layers of random weights that is a few percent of the logits' scale.
  EXPECT_LT(diff, 0.1 * scale);
  EXPECT_GT(diff, 0.0);
  // Saved as a chainlm checkpoint and loaded again, every tensor keeps its form.
  save_model(*back, dir.file("ckpt"));
  auto again = load_model(dir.file("ckpt"));
  EXPECT_FALSE(again->is_quantized(wq));
  EXPECT_EQ(logits_of(*again, 1, tokens), lb);
  // A copy (eval's per-thread models) keeps every tensor's form too: it took every matrix for
  // quantized and failed ("tensor ... is not quantized") on the F32 ones.
  Model copy(back->config());
  copy.copy_weights_from(*back);
  EXPECT_FALSE(copy.is_quantized(wq));
  EXPECT_TRUE(copy.is_quantized(back->params().find("layers.0.feed_forward.w2.chain0.weight")));
  EXPECT_EQ(logits_of(copy, 1, tokens), lb);
}

TEST(GgufConvert, OneChainSubModelOfACoLMModel) {
  for (bool kv_share : {false, true}) {
    TempDir dir;
    ModelConfig c = test::tiny_config({2, 1, 1}, kv_share, kv_share ? 2 : 4);
    Model m(c);
    randomize(m, 11);
    export_gguf(m, options("f32"), dir.file("m.gguf"));
    auto back = load_model(dir.file("m.gguf"));
    EXPECT_EQ(back->config().n_chains(), 1);
    EXPECT_EQ(back->config().dim, m.layout().dim.width(0));
    const auto tokens = random_tokens(12, c.vocab_size, 12);
    EXPECT_EQ(logits_of(*back, 1, tokens), logits_of(m, 1, tokens));
    const std::string e = error_of([&] { export_gguf(m, options("f32", 2), dir.file("two.gguf")); });
    EXPECT_NE(e.find("per-chain RMSNorm"), std::string::npos) << e;
    EXPECT_FALSE(fs::exists(dir.file("two.gguf")));
  }
}

// A quantized CoLM model whose later chain boundaries fall inside a 32-block keeps its embedding
// and head in fp32 (model.h quantize_weights). Its 1-chain sub-model's rows are whole blocks: the
// export quantized those tables afresh, then refused its own file ("the GGUF model's logits
// differ ... a bug"); where the rows were not whole blocks it rounded them to F16 (a user trial).
TEST(GgufConvert, TablesAQuantizedModelHoldsInFp32GoInAsF32) {
  // Chains of 64, 16 and 16 columns (the 1-chain rows whole blocks), and five of 16 (not).
  for (bool whole : {true, false}) {
    ModelConfig c = test::tiny_config(
        whole ? std::vector<int>{4, 1, 1} : std::vector<int>{1, 1, 1, 1, 1}, false);
    c.dim = whole ? 96 : 80;
    c.n_heads = c.n_kv_heads = c.dim / 16;
    c.ffn_dim = 2 * c.dim;
    c.vocab_size = 64;
    validate_config(c, "test");
    for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
      SCOPED_TRACE(std::string(whole ? "whole" : "partial") + " blocks, " + quant_type_name(t));
      TempDir dir;
      Model q(c);
      randomize(q, 17);
      q.quantize_weights(t);
      ASSERT_FALSE(q.is_quantized(q.params().find("tok_embeddings.weight")));
      const GgufExportSummary s = export_gguf(q, options(""), dir.file("a.gguf"));
      EXPECT_EQ(s.fp32_tensors, 2);
      GgufReader g(dir.file("a.gguf"));
      EXPECT_EQ(g.find("token_embd.weight")->type, kGgmlF32);
      EXPECT_EQ(g.find("output.weight")->type, kGgmlF32);
      if (!whole) continue;  // its matrices fall back to F32: logits differ (test above)
      EXPECT_EQ(s.fallback_tensors, 0);
      EXPECT_TRUE(s.copied_blocks);
      EXPECT_EQ(g.find("blk.0.attn_q.weight")->type, t == QuantType::kQ8_0 ? kGgmlQ8_0 : kGgmlQ4_0);
      auto back = load_model(dir.file("a.gguf"));
      const auto tokens = random_tokens(12, c.vocab_size, 18);
      EXPECT_EQ(logits_of(*back, 1, tokens), logits_of(q, 1, tokens));
    }
  }
}

TEST(GgufConvert, RefusesToQuantizeQuantizedWeightsAgain) {
  TempDir dir;
  Model m(llama_config(false));
  randomize(m, 13);
  m.quantize_weights(QuantType::kQ4_0);
  const std::string e = error_of([&] { export_gguf(m, options("q8_0"), dir.file("x.gguf")); });
  EXPECT_NE(e.find("quantize already quantized weights a second time"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir.file("x.gguf")));
  // f32 from a quantized model: its exact dequantized weights.
  export_gguf(m, options("f32"), dir.file("f.gguf"));
  auto back = load_model(dir.file("f.gguf"));
  EXPECT_FALSE(back->quantized());
  const int w2 = m.params().find("layers.1.feed_forward.w2.chain0.weight");
  const ParamInfo& p = m.params().info(w2);
  std::vector<float> row(p.cols());
  for (int64_t r = 0; r < p.shape[0]; ++r) {
    dequantize_row(QuantType::kQ4_0, m.quantized_blocks(w2) + r * quant_row_bytes(QuantType::kQ4_0, p.cols()),
                   p.cols(), row.data());
    ASSERT_EQ(0, std::memcmp(row.data(), back->params().value(w2) + r * p.cols(), row.size() * 4)) << r;
  }
}

TEST(GgufConvert, TheSentencePieceTokenizerGoesInside) {
  TempDir dir;
  // A small corpus, enough for 300 pieces.
  std::vector<std::string> docs;
  const char* words[] = {"apple", "river", "stone", "garden", "window", "yellow", "market", "silver",
                         "thunder", "pencil", "the", "a", "of", "and", "42", "über", "日本"};
  Rng rng(3);
  for (int d = 0; d < 400; ++d) {
    std::string s;
    for (int w = 0; w < 12; ++w) s += std::string(w ? " " : "") + words[rng.below(17)];
    docs.push_back(s);
  }
  SentencePieceTrainOptions o;
  o.vocab_size = 300;
  write_file_atomic(dir.file("tok.model"), train_sentencepiece_model(docs, "test corpus", o));
  ModelConfig c = llama_config(true);
  c.vocab_size = 300;
  Model m(c);
  randomize(m, 15);
  GgufExportOptions eo = options("q8_0");
  eo.tokenizer = dir.file("tok.model");
  export_gguf(m, eo, dir.file("m.gguf"));
  GgufReader g(dir.file("m.gguf"));
  const SentencePieceVocab v = sentencepiece_vocab(testing::read_bytes(dir.file("tok.model")), "tok.model");
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g.value("tokenizer.ggml.tokens").strings, v.pieces);
  EXPECT_EQ(g.value("tokenizer.ggml.tokens").strings[1], "<s>");
  EXPECT_EQ(g.value("tokenizer.ggml.token_type").ints[0], 2);  // <unk>
  EXPECT_EQ(g.value("tokenizer.ggml.token_type").ints[1], 3);  // <s>: control
  EXPECT_EQ(g.value("tokenizer.ggml.token_type").ints[3], 6);  // <0x00>: byte
  EXPECT_EQ(g.value("tokenizer.ggml.scores").floats.size(), 300u);
  EXPECT_EQ(g.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(g.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_TRUE(g.get_bool("tokenizer.ggml.add_space_prefix"));
  EXPECT_TRUE(g.get_bool("tokenizer.ggml.add_bos_token"));
  // chainlm reads back the very model it embedded: same fingerprint, same encodings.
  EXPECT_EQ(tokenizer_fingerprint(dir.file("m.gguf")), tokenizer_fingerprint(dir.file("tok.model")));
  auto original = load_tokenizer(dir.file("tok.model"));
  auto inside = load_tokenizer(dir.file("m.gguf"));
  for (const std::string& text : {std::string("the apple of 42 rivers"), std::string("über 日本 ☃ stones")})
    EXPECT_EQ(inside->encode(text), original->encode(text)) << text;
  // A vocabulary padded past the tokenizer's was refused ("not the tokenizer this model was
  // trained with"): llama.cpp gets an unused token for every padding row, chainlm the model.
  ModelConfig c2 = c;
  c2.vocab_size = 304;
  Model m2(c2);
  m2.init_random(3);
  eo.type = "f32";
  export_gguf(m2, eo, dir.file("padded.gguf"));
  const GgufReader padded(dir.file("padded.gguf"));
  const auto& pieces = padded.value("tokenizer.ggml.tokens").strings;
  ASSERT_EQ(pieces.size(), 304u);
  EXPECT_EQ(std::vector<std::string>(pieces.begin(), pieces.begin() + 300), v.pieces);
  EXPECT_EQ(pieces[300], "[PAD300]");
  EXPECT_EQ(pieces[303], "[PAD303]");
  EXPECT_EQ(padded.value("tokenizer.ggml.token_type").ints[303], 5);  // unused
  EXPECT_EQ(padded.value("tokenizer.ggml.scores").floats.size(), 304u);
  EXPECT_EQ(tokenizer_fingerprint(dir.file("padded.gguf")),
            tokenizer_fingerprint(dir.file("tok.model")));
  EXPECT_EQ(load_model(dir.file("padded.gguf"))->config().vocab_size, 304);
  // More tokens than the model has rows is not this model's tokenizer.
  ModelConfig c3 = c;
  c3.vocab_size = 299;
  Model m3(c3);
  const std::string e = error_of([&] { export_gguf(m3, eo, dir.file("bad.gguf")); });
  EXPECT_NE(e.find("has 300 tokens but the model has 299"), std::string::npos) << e;
}

TEST(GgufConvert, RefusesWhatChainlmDoesNotRun) {
  TempDir dir;
  auto write_with = [&](const std::string& path, const std::function<void(GgufWriter&)>& extra, bool q6k = false) {
    Model m(llama_config(true, 256));  // rows of 256: a whole Q6_K block
    randomize(m, 17);
    export_gguf(m, options("f32"), dir.file("base.gguf"));
    GgufReader base(dir.file("base.gguf"));
    GgufWriter w;
    for (const std::string& key : base.keys()) {
      const GgufValue& v = base.value(key);
      if (key == "general.architecture" || key == kGgufMetadataCrcKey)
        continue;  // the writer's own
      if (v.type == GgufType::kString) w.add_string(key, v.s);
      else if (v.type == GgufType::kFloat32) w.add_float32(key, (float)v.f);
      else if (v.type == GgufType::kUint32) w.add_uint32(key, (uint32_t)v.u);
    }
    extra(w);
    for (const GgufTensorInfo& t : base.tensors()) {
      if (q6k && t.name == "blk.0.ffn_up.weight") {
        w.add_tensor(t.name, 14 /* Q6_K */, {256, 96}, std::vector<uint8_t>(96 * 210));
        continue;
      }
      w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(base.data(t), base.data(t) + t.bytes));
    }
    w.write(path);
  };
  write_with(dir.file("gpt2.gguf"), [](GgufWriter& w) { w.add_string("general.architecture", "gpt2"); });
  EXPECT_NE(error_of([&] { load_model(dir.file("gpt2.gguf")); }).find("architecture 'gpt2' is not supported"),
            std::string::npos);
  write_with(dir.file("q6k.gguf"), [](GgufWriter& w) { w.add_string("general.architecture", "llama"); }, true);
  const std::string e = error_of([&] { load_model(dir.file("q6k.gguf")); });
  EXPECT_NE(e.find("tensor 'blk.0.ffn_up.weight' is Q6_K, which chainlm does not run"), std::string::npos) << e;
  write_with(dir.file("extra.gguf"), [](GgufWriter& w) {
    w.add_string("general.architecture", "llama");
  });
  EXPECT_NO_THROW(load_model(dir.file("extra.gguf")));
  // A GGUF without the tokenizer chainlm embeds: load_tokenizer says what to pass instead.
  const std::string t = error_of([&] { load_tokenizer(dir.file("extra.gguf")); });
  EXPECT_NE(t.find("pass --tokenizer"), std::string::npos) << t;
}

}  // namespace
}  // namespace chainlm
