// `chainlm export --format hf` for LLaMA-3-style directories: --dtype bf16/f16, sharding past
// --max-shard-size, llama3 rope_scaling and bos/eos token id lists carried from a HF source, and
// the refusals of bad options (nothing written).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/hf_llama_convert.h"
#include "model/model_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_bytes(path)); }

// A LLaMA-3-style HF directory (GQA, tied embeddings, llama3 RoPE scaling, three EOS ids) as the
// tests' own export writes it, with the config edited as an instruct model's reads.
class HfExportCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelConfig c = test::llama_config(true);
    c.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 32, .low_freq_factor = 1,
                      .high_freq_factor = 4, .original_max_position_embeddings = 256};
    Model m(c);
    test::randomize_trained_like(m, 2);
    hf = dir.file("llama3");
    export_hf_llama(m, 1, hf);
    nlohmann::json j = read_json(hf + "/config.json");
    j["bos_token_id"] = 0;
    j["eos_token_id"] = {1, 8, 9};
    write_bytes(hf + "/config.json", j.dump(2));
  }
  TempDir dir;
  std::string hf;
};

TEST_F(HfExportCli, Bf16ShardsCarryTheLlama3Settings) {
  const std::string out = dir.file("out");
  auto r = run_chainlm(dir, "export --model " + quote(hf) + " --format hf --no-tokenizer --dtype bf16 "
                            "--max-shard-size 10KB --out " + quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "against the weights rounded to bf16")) << r.out;
  EXPECT_TRUE(contains(r.out, "config.json (torch_dtype bfloat16)")) << r.out;
  EXPECT_TRUE(contains(r.out, "shards (model-00001-of-")) << r.out;
  const nlohmann::json src = read_json(hf + "/config.json"), j = read_json(out + "/config.json");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["rope_scaling"], src["rope_scaling"]);
  EXPECT_EQ(j["bos_token_id"], src["bos_token_id"]);
  EXPECT_EQ(j["eos_token_id"], nlohmann::json::parse("[1, 8, 9]"));
  const nlohmann::json index = read_json(out + "/model.safetensors.index.json");
  EXPECT_GE(index["weight_map"].size(), 20u);
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it)
    EXPECT_TRUE(fs::exists(out + "/" + it.value().get<std::string>())) << it.key();
  // The weights are the source's rounded to bf16; every command reads the directory.
  auto source = load_model(hf);
  auto back = load_model(out);
  for (size_t i = 0; i < source->params().size(); ++i)
    ASSERT_EQ(back->params().values()[i], round_to_hf_dtype(source->params().values()[i], "bf16")) << i;
  r = run_chainlm(dir, "info --model " + quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "rope_scaling llama3 (factor 32, low_freq_factor 1, high_freq_factor 4, "
                              "original_max_position_embeddings 256)"))
      << r.out;
  // f16 in one file (the default 5GB limit); f32 is the default dtype, as before.
  r = run_chainlm(dir, "export --model " + quote(out) + " --format hf --no-tokenizer --dtype f16 --out " +
                           quote(dir.file("f16")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(dir.file("f16/config.json"))["torch_dtype"], "float16");
  EXPECT_TRUE(fs::exists(dir.file("f16/model.safetensors")));
  r = run_chainlm(dir, "export --model " + quote(hf) + " --format hf --no-tokenizer --out " + quote(dir.file("f32")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "max |logit difference| after reading it back: 0")) << r.out;
  EXPECT_EQ(read_json(dir.file("f32/config.json"))["torch_dtype"], "float32");
}

TEST_F(HfExportCli, ExpandThenExportKeepsTheScaling) {
  auto r = run_chainlm(dir, "expand --from " + quote(hf) + " --add-chains 6 --kv-share --out " + quote(dir.file("e")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(dir.file("e/config.json"))["rope_scaling"]["rope_type"], "llama3");
  r = run_chainlm(dir, "export --model " + quote(dir.file("e")) + " --chains 1 --format hf --no-tokenizer --out " +
                           quote(dir.file("back")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(dir.file("back/config.json"))["rope_scaling"], read_json(hf + "/config.json")["rope_scaling"]);
  r = run_chainlm(dir, "export --model " + quote(dir.file("e")) + " --chains 1 --format gguf --no-tokenizer --out " +
                           quote(dir.file("e.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "max |logit difference| after reading it back: 0")) << r.out;
}

TEST_F(HfExportCli, BadOptionsAreRefusedBeforeAnythingIsWritten) {
  const std::string out = dir.file("out");
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"--format hf --dtype bf17", "--dtype: bf17 not in {f32,bf16,f16}"},
      {"--format hf --dtype fp16", "--dtype"},
      {"--format hf --max-shard-size 5G", "--max-shard-size: '5G' is ambiguous: write 5GB"},
      {"--format hf --max-shard-size lots", "--max-shard-size: 'lots' is not a size"},
      {"--format hf --max-shard-size 0", "must be a positive size"},
      {"--format hf --max-shard-size 10XB", "unknown unit 'XB'"},
      {"--format gguf --dtype bf16", "--dtype applies to --format hf only"},
      {"--format gguf --max-shard-size 1GB",
       "export: --max-shard-size applies to --format hf only"},
      {"--format hf --type f16", "--type applies to --format gguf only"},
  };
  for (const Case& c : cases) {
    auto r = run_chainlm(dir, "export --model " + quote(hf) + " --no-tokenizer " + c.args + " --out " + quote(out));
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_TRUE(contains(r.err, c.expect)) << c.args << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
  // An existing output is never overwritten, even an empty directory.
  fs::create_directories(out);
  auto r = run_chainlm(dir, "export --model " + quote(hf) + " --no-tokenizer --format hf --dtype bf16 --out " + quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "already exists")) << r.err;
  EXPECT_TRUE(fs::is_empty(out));
}

}  // namespace
}  // namespace chainlm
