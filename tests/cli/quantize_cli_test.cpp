// chainlm quantize end to end: a trained run quantized to q8_0 and q4_0 loads in generate, eval
// and info (with its weight format and bytes), stays close to fp32 in perplexity, and what a
// quantized checkpoint cannot do is refused with a message.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::quote;
using testing::run_chainlm;
using testing::write_bytes;

class QuantizeCli : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(300, "small models read fewer bytes per token ");
    write_bytes(dir.file("config.json"), R"({"dim": 64, "n_layers": 2, "n_heads": 4, "ffn_dim": 128,
                                              "vocab_size": 258, "chains": [1, 1], "max_seq_len": 64})");
    run = dir.file("run");
    auto r = run_chainlm(dir, "train --config " + quote(dir.file("config.json")) + " --data " +
                                  quote(data) + " --out " + quote(run) +
                                  " --steps 30 --batch-size 4 --seq-len 32 --quiet "
                                  "--chain-loss-weights 1,1 --threads 1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // The per-sub-model losses `eval ppl --json` reports.
  std::vector<double> losses(const std::string& model) {
    auto r = run_chainlm(dir, "eval ppl --model " + quote(model) + " --data " +
                                  quote(data + "/val.bin") + " --json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json j =
        nlohmann::json::parse(r.out);  // named: a range-for over a temporary's member dangles
    std::vector<double> out;
    for (const auto& s : j.at("chains")) out.push_back(s.at("loss").get<double>());
    return out;
  }
  std::string run;
};

TEST_F(QuantizeCli, QuantizedCheckpointsWorkInEveryInferenceCommand) {
  const std::vector<double> fp32 = losses(run);
  ASSERT_EQ(fp32.size(), 2u);
  for (const std::string type : {"q8_0", "q4_0"}) {
    const std::string q = dir.file(type);
    auto r = run_chainlm(
        dir, "quantize --model " + quote(run) + " --type " + type + " --out " + quote(q));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "weights   " + type)) << r.out;
    EXPECT_FALSE(contains(r.out, "stay q8_0")) << r.out;     // every row here is whole 32-blocks
    EXPECT_TRUE(fs::exists(q + "/chainlm_tokenizer.json"));  // the run's byte tokenizer came along
    EXPECT_LT(fs::file_size(q + "/model.safetensors"),
              fs::file_size(run + "/step-00000030/model.safetensors") / 3);

    auto info = run_chainlm(dir, "info --model " + quote(q));
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_TRUE(contains(info.out, "weights     " + type)) << info.out;
    info = run_chainlm(dir, "info --json --model " + quote(q));
    EXPECT_EQ(nlohmann::json::parse(info.out)["weights"]["format"], type);
    // q4_0 keeps the embedding and the head in q8_0 (2 of its 30 matrices, chain blocks counted
    // apart).
    EXPECT_EQ(nlohmann::json::parse(
                  run_chainlm(dir, "info --json --model " + quote(run)).out)["weights"]["matrices"],
              (nlohmann::json{{"fp32", 30}}));  // every model's, so scripts find it
    const nlohmann::json expected =
        type == "q8_0" ? nlohmann::json{{"q8_0", 30}} : nlohmann::json{{"q4_0", 28}, {"q8_0", 2}};
    EXPECT_EQ(nlohmann::json::parse(info.out)["weights"]["matrices"], expected);

    auto g = run_chainlm(dir, "generate --model " + quote(q) +
                                  " --prompt 'small' --temperature 0 --max-tokens 8 --chains 1");
    EXPECT_EQ(g.exit_code, 0) << g.err;
    EXPECT_TRUE(contains(g.out, "small")) << g.out;
    // --json names the weights that ran (it said "fp32", --precision's default).
    g = run_chainlm(dir,
                    "generate --json --model " + quote(q) + " --prompt 'small' --max-tokens 2");
    ASSERT_EQ(g.exit_code, 0) << g.err;
    EXPECT_EQ(nlohmann::json::parse(g.out)["precision"], type) << g.out;

    // Perplexity moves by little: the loss by at most 0.5% (q8_0) or 5% (q4_0) per sub-model.
    const std::vector<double> ql = losses(q);
    ASSERT_EQ(ql.size(), 2u);
    for (int k = 0; k < 2; ++k) {
      EXPECT_NE(ql[k], fp32[k]) << type << " k=" << k + 1 << ": were the fp32 weights used?";
      EXPECT_LT(std::fabs(ql[k] - fp32[k]) / fp32[k], type == "q8_0" ? 0.005 : 0.05)
          << type << " k=" << k + 1;
    }
  }
}

// q4_0 keeps matrices whose rows are not whole 32-weight blocks in q8_0: on a model of width 48
// that is every one, and the file said "q4_0, 2.82x smaller" with nothing 4-bit. Said now.
TEST_F(QuantizeCli, Q4SaysWhichMatricesStayQ8) {
  write_bytes(dir.file("odd.json"), R"({"dim": 48, "n_layers": 1, "n_heads": 4, "ffn_dim": 100,
                                         "vocab_size": 258, "max_seq_len": 32})");
  auto r = run_chainlm(dir, "train --config " + quote(dir.file("odd.json")) + " --data " +
                                quote(data) + " --out " + quote(dir.file("odd")) +
                                " --steps 1 --batch-size 2 --seq-len 16 --quiet --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "quantize --model " + quote(dir.file("odd")) + " --type q4_0 --out " +
                           quote(dir.file("odd-q4")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "of the 9 weight matrices stay q8_0: their rows (48, 100 weights)"))
      << r.out;
  EXPECT_TRUE(contains(r.err, "warning: nothing in " + dir.file("odd-q4") +
                                  " is 4-bit: 9 of its 9 weight matrices stay q8_0"))
      << r.err;
  // info called it "q4_0" and no more.
  r = run_chainlm(dir, "info --model " + quote(dir.file("odd-q4")));
  EXPECT_TRUE(contains(r.out, "weights     q4_0, ") && contains(r.out, "; matrices: 9 q8_0\n"))
      << r.out;
  r = run_chainlm(dir, "info --json --model " + quote(dir.file("odd-q4")));
  EXPECT_EQ(nlohmann::json::parse(r.out)["weights"]["matrices"], (nlohmann::json{{"q8_0", 9}}));
  // Its GGUF holds no block at all (GGUF's blocks need whole rows): "weights q4_0; 9 matrices
  // in F32" read as a quantized file.
  r = run_chainlm(dir, "export --model " + quote(dir.file("odd-q4")) + " --format gguf --out " +
                           quote(dir.file("odd-q4.gguf")) + " --no-tokenizer");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "weights   F32 in every matrix, none q4_0")) << r.out;
}

TEST_F(QuantizeCli, ChainsKeepsTheSubModelAlone) {
  // The 2-chain run's sub-model 1, quantized alone: a 1-chain model of half the width whose
  // perplexity is the full quantized model's k=1 perplexity, in fewer bytes.
  const std::string both = dir.file("q2"), one = dir.file("q1");
  auto r = run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --out " + quote(both));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --chains 1 --out " + quote(one));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "(sub-model of 1 of its 2 chains)")) << r.out;
  EXPECT_LT(fs::file_size(one + "/model.safetensors"), fs::file_size(both + "/model.safetensors"));
  auto info = run_chainlm(dir, "info --json --model " + quote(one));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const nlohmann::json j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j.at("chains"), nlohmann::json({1}));
  EXPECT_EQ(j.at("dim"), 32);
  const std::vector<double> full = losses(both), alone = losses(one);
  ASSERT_EQ(alone.size(), 1u);
  EXPECT_DOUBLE_EQ(alone[0], full[0]);
  r = run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --chains 3 --out " + quote(dir.file("q3")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--chains 3 is outside 1..2")) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("q3")));
}

TEST_F(QuantizeCli, RefusesWhatAQuantizedCheckpointCannotDo) {
  const std::string q = dir.file("q");
  ASSERT_EQ(run_chainlm(dir, "quantize --model " + quote(run) + " --type q4_0 --out " + quote(q))
                .exit_code,
            0);
  const auto refused = [&](const std::string& args, const std::string& message) {
    auto r = run_chainlm(dir, args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_TRUE(contains(r.err, message)) << args << ": " << r.err;
  };
  refused("quantize --model " + quote(q) + " --type q8_0 --out " + quote(dir.file("qq")),
          "is already quantized (q4_0)");
  refused("quantize --model " + quote(run) + " --type q8_0 --out " + quote(q), "already exists");
  refused("quantize --model " + quote(run) + " --type q5_1 --out " + quote(dir.file("q5")), "q5_1");
  refused("train --init " + quote(q) + " --data " + quote(data) + " --out " + quote(dir.file("t")) +
              " --steps 1",
          "quantized models do not train");
  refused("export --model " + quote(q) + " --chains 1 --format hf --no-tokenizer --out " +
              quote(dir.file("hf")),
          "holds q4_0 weights");
  refused("generate --model " + quote(q) + " --precision bf16 --max-tokens 2",
          "bf16 applies to fp32 models only: use the fp32 checkpoint the model was quantized from");
  refused("expand --from " + quote(q) + " --add-chains 2 --out " + quote(dir.file("e")),
          "expand an fp32 model (the checkpoint it was quantized from");
  EXPECT_FALSE(fs::exists(dir.file("qq")));
  EXPECT_FALSE(fs::exists(dir.file("t") + "/latest"));
}

}  // namespace
}  // namespace chainlm
