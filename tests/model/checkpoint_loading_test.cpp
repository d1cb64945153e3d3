// Loading checkpoints from malformed directories: every failure is a chainlm::Error naming
// what is wrong (regressions of fuzz/checkpoint_fuzzer findings, docs/reliability.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "error_of.h"
#include "io/hf_llama.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/hf_llama_convert.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

using testing::TempDir;
using testing::write_bytes;

using test::error_of;

// A run directory whose `latest` file holds `latest`, beside one real checkpoint.
std::string run_with_latest(const TempDir& dir, const std::string& latest) {
  Model model(test::tiny_config({1, 1}, true, 2));
  model.init_random(1);
  save_model(model, dir.file("step-00000001"));
  write_bytes(dir.file("latest"), latest);
  return dir.path().string();
}

// Found by fuzzing: a `latest` naming a file longer than the OS allows made
// std::filesystem::is_directory throw filesystem_error ("File name too long") out of load_model.
TEST(CheckpointLoading, OverlongLatestNameIsAnError) {
  TempDir dir;
  const std::string run = run_with_latest(dir, std::string(5000, 'x') + "\n");
  const std::string err = error_of([&] { load_model(run); });
  EXPECT_NE(err.find("latest: does not name a checkpoint directory of the run ('xxx"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("5000 bytes"), std::string::npos) << err;
}

TEST(CheckpointLoading, LatestMustNameADirectoryInsideTheRun) {
  TempDir dir;
  for (const std::string& bad :
       std::vector<std::string>{"..", ".", "../step-00000001", std::string("step\0x", 6)}) {
    const std::string run = run_with_latest(dir, bad + "\n");
    const std::string err = error_of([&] { resolve_checkpoint_dir(run); });
    EXPECT_NE(err.find("does not name a checkpoint directory of the run"), std::string::npos)
        << "latest = '" << bad << "': " << err;
  }
  const std::string run = run_with_latest(dir, "step-00000002\n");
  EXPECT_NE(error_of([&] { load_model(run); })
                .find("names checkpoint 'step-00000002', which does not exist"),
            std::string::npos);
  write_bytes(dir.file("latest"), "step-00000001\n");
  EXPECT_NO_THROW(load_model(run));
  // Whitespace around the name, as an editor leaves it ("names '  step-00000001'").
  write_bytes(dir.file("latest"), "  step-00000001 \r\n");
  EXPECT_EQ(resolve_checkpoint_dir(run), dir.file("step-00000001"));
  // A link to the checkpoint in its place ("cannot read latest: Is a directory").
  std::filesystem::remove(dir.file("latest"));
  std::filesystem::create_directory_symlink("step-00000001", dir.file("latest"));
  EXPECT_NE(error_of([&] { resolve_checkpoint_dir(run); })
                .find("is a directory (or a link to one); chainlm's `latest` is a file holding the "
                      "checkpoint's name"),
            std::string::npos);
}

// A run without `latest` (stopped before naming its checkpoint) is named as such, with its
// newest checkpoint (by step, not by name length) and the command that goes on with it.
TEST(CheckpointLoading, ARunWithoutLatestNamesItsNewestCheckpoint) {
  TempDir dir;
  Model model(test::tiny_config({1, 1}, true, 2));
  model.init_random(1);
  save_model(model, dir.file("step-00000009"));
  save_model(model, dir.file("step-00000012"));
  std::filesystem::create_directory(dir.file("step-00000099"));  // no config.json: not a checkpoint
  std::filesystem::create_directory(dir.file("step-00000098"));  // no weights: neither
  testing::write_bytes(dir.file("step-00000098/config.json"), "{}");
  std::string err = error_of([&] { resolve_checkpoint_dir(dir.path().string()); });
  EXPECT_NE(
      err.find("no 'latest' file); it holds checkpoints, the newest " + dir.file("step-00000012")),
      std::string::npos)
      << err;
  EXPECT_NE(err.find("--resume"), std::string::npos) << err;
  TempDir empty;
  err = error_of([&] { resolve_checkpoint_dir(empty.path().string()); });
  EXPECT_NE(err.find("no 'latest' file)"), std::string::npos) << err;
  EXPECT_EQ(err.find("holds checkpoints"), std::string::npos) << err;
}

// parameter_count works out from the config what Model allocates tensor by tensor.
TEST(CheckpointLoading, ParameterCountIsTheModelsWithoutBuildingIt) {
  std::vector<ModelConfig> configs = {test::tiny_config({1}, false),
                                      test::tiny_config({1, 1}, true, 2),
                                      test::tiny_config({1, 2, 1}, false, 4),
                                      test::tiny_config({2, 2}, true, 2)};
  configs[0].tie_embeddings = true;
  configs[3].phd.repeat = 2;
  for (const ModelConfig& c : configs) {
    const Model model(c);
    EXPECT_EQ(parameter_count(c), model.params().numel()) << config_to_json(c).dump();
  }
}

// Floats are written as the decimals they were given (config.json said 9.999999747378752e-06 for
// a norm_eps of 1e-5, the float's double), and read back as the same float.
TEST(CheckpointLoading, ConfigFloatsAreWrittenAsGiven) {
  ModelConfig c;
  c.norm_eps = 1e-5f;
  c.rope_theta = 500000.0f;
  const nlohmann::json j = config_to_json(c);
  EXPECT_EQ(j["norm_eps"].dump(), "1e-05");
  EXPECT_EQ(j["rope_theta"].dump(), "500000.0");
  EXPECT_EQ(j["norm_eps"].get<float>(), 1e-5f);
}

// Sizes beyond what any model has are refused by name, so no size derived from a config can
// overflow (a dim of 2^30 made n_heads-sized tables and D*D products absurd).
TEST(CheckpointLoading, ConfigSizesAreBounded) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"dim", R"({"dim": 2097152, "n_layers": 1, "n_heads": 2, "ffn_dim": 8, "vocab_size": 8})"},
      {"ffn_dim", R"({"dim": 8, "n_layers": 1, "n_heads": 2, "ffn_dim": 8388608, "vocab_size": 8})"},
      {"n_layers", R"({"dim": 8, "n_layers": 70000, "n_heads": 2, "ffn_dim": 8, "vocab_size": 8})"},
      {"max_seq_len",
       R"({"dim": 8, "n_layers": 1, "n_heads": 2, "ffn_dim": 8, "vocab_size": 8, "max_seq_len": 33554432})"},
  };
  for (const auto& [field, text] : cases) {
    const std::string err =
        error_of([&] { config_from_json(nlohmann::json::parse(text), "c.json"); });
    EXPECT_NE(err.find("c.json: '" + field + "' ("), std::string::npos) << err;
    EXPECT_NE(err.find("the largest this engine accepts"), std::string::npos) << err;
  }
}

// Found by fuzzing (UBSan): config fields were read with nlohmann's get<int>()/get<float>(),
// which converts 4.9e19 to int and 1e300 to float with undefined behaviour, and 2^32 + 8 to
// int by silent truncation (a "dim" of 4294967304 read as 8). Each is now refused by name.
TEST(CheckpointLoading, ConfigNumbersOutsideTheirTypeAreErrors) {
  const std::string base = R"("n_layers": 1, "n_heads": 2, "ffn_dim": 8, "vocab_size": 8)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"dim", R"("dim": 4.9e19)"},
      {"dim", R"("dim": 4294967304)"},
      {"dim", R"("dim": -4294967304)"},
      {"dim", R"("dim": 8.5)"},
      {"rope_theta", R"("dim": 8, "rope_theta": 1e300)"},
      {"norm_eps", R"("dim": 8, "norm_eps": -1e39)"},
      {"chains", R"("dim": 8, "chains": [1, 1e20])"},
      {"chains", R"("dim": 8, "chains": [1, 2147483648])"},
      {"repeat", R"("dim": 8, "phd": {"repeat": 1e10})"},
  };
  for (const auto& [field, fields] : cases) {
    const std::string text = "{" + fields + ", " + base + "}";
    const std::string err =
        error_of([&] { config_from_json(nlohmann::json::parse(text), "c.json"); });
    EXPECT_NE(err.find("'" + field + "' has the wrong type or is out of range ("),
              std::string::npos)
        << text << " -> " << err;
  }
  EXPECT_NO_THROW(config_from_json(
      nlohmann::json::parse(R"({"dim": 8, "rope_theta": 500000, "norm_eps": 1e-6, )" + base + "}"),
      "c.json"));
}

// Found by fuzzing (ASan stack-overflow): the wrong-type message quoted the value with
// nlohmann's dump(), which recurses once per nesting level; a million nested arrays overflowed
// the stack. The message now quotes a bounded excerpt.
TEST(CheckpointLoading, DeeplyNestedConfigValueIsAnError) {
  const int depth = 1000000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  for (const std::string& text :
       {R"({"dim": )" + deep + R"(, "n_layers": 1, "n_heads": 2, "ffn_dim": 8, "vocab_size": 8})",
        R"({"dim": 8, "n_layers": 1, "n_heads": 2, "ffn_dim": 8, "vocab_size": 8, "phd": )" + deep +
            "}"}) {
    const std::string err =
        error_of([&] { config_from_json(nlohmann::json::parse(text), "c.json"); });
    EXPECT_NE(err.find("[[[[[[[[[...]]]]]]]]]"), std::string::npos) << err.substr(0, 300);
    EXPECT_LT(err.size(), 400u);
  }
}

// A checkpoint of many tiny tensors is as valid as one of few large ones. ParamStore found
// names by linear search, so building a model was quadratic in its tensor count: a 7.5 MB
// checkpoint of 65536 one-wide layers (590k tensors) passed every size check and then kept
// load_model busy for many minutes. Names are now indexed; this checks the index on 1024
// layers (9219 tensors) through a save and load.
TEST(CheckpointLoading, ManyTensorsAreFoundByName) {
  ModelConfig c;
  c.dim = 2;
  c.n_layers = 1024;
  c.n_heads = 1;
  c.ffn_dim = 2;
  c.vocab_size = 2;
  c.max_seq_len = 4;
  c.n_kv_heads = 1;
  validate_config(c, "many layers");
  Model model(c);
  model.init_random(3);
  const ParamStore& ps = model.params();
  ASSERT_EQ(ps.infos().size(), 3u + 9u * 1024u);  // embedding, final norm, head
  for (int i = 0; i < (int)ps.infos().size(); ++i) ASSERT_EQ(ps.find(ps.info(i).name), i);
  EXPECT_EQ(ps.find("layers.1024.ffn_norm.weight"), -1);
  ParamStore copy = ps;
  EXPECT_NE(error_of([&] { copy.add("layers.17.attention.wq.chain0.weight", {2, 2}, 0, true); })
                .find("duplicate parameter name layers.17.attention.wq.chain0.weight"),
            std::string::npos);

  TempDir dir;
  save_model(model, dir.file("many"));
  const auto loaded = load_model(dir.file("many"));
  const int last = loaded->params().find("layers.1023.feed_forward.w2.chain0.weight");
  ASSERT_GE(last, 0);
  EXPECT_EQ(loaded->params().value(last)[1],
            ps.value(ps.find("layers.1023.feed_forward.w2.chain0.weight"))[1]);
}

// The "header claiming 10^12 elements" case of a checkpoint: a valid config.json describing a
// model of 1.4 * 10^17 parameters beside a model.safetensors of a few KB. Building the model
// first would ask the allocator for 576 PB; the loader refuses it from the file size.
TEST(CheckpointLoading, HugeConfigBesideSmallWeightsIsRefusedBeforeAllocating) {
  TempDir dir;
  Model model(test::tiny_config({1, 1}, true, 2));
  model.init_random(1);
  save_model(model, dir.file("ckpt"));
  write_bytes(dir.file("ckpt/config.json"),
              R"({"dim": 1048576, "n_layers": 65536, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 8, )"
              R"("vocab_size": 37, "chains": [1, 1], "kv_share": true, "max_seq_len": 32})");
  const std::string err = error_of([&] { load_model(dir.file("ckpt")); });
  EXPECT_NE(err.find("model.safetensors: holds "), std::string::npos) << err;
  EXPECT_NE(err.find("describes 144116562544033792 parameters"), std::string::npos) << err;
  EXPECT_NE(err.find("the weights do not match the config"), std::string::npos) << err;

  // A config that matches its file still loads, and one tensor missing is still named.
  save_model(model, dir.file("ok"));
  EXPECT_NO_THROW(load_model(dir.file("ok")));
}

// The same for a Hugging Face directory: the config is checked against the weights' headers
// before the model is built.
TEST(CheckpointLoading, HugeHfConfigIsRefusedBeforeAllocating) {
  TempDir dir;
  Model model(test::tiny_config({1}, false));
  model.init_random(2);
  export_hf_llama(model, 1, dir.file("hf"));
  nlohmann::json config = nlohmann::json::parse(testing::read_bytes(dir.file("hf/config.json")));
  config["num_hidden_layers"] = 65536;
  config["hidden_size"] = 1 << 20;
  config["intermediate_size"] = 1 << 22;
  config["vocab_size"] = 1 << 30;
  write_bytes(dir.file("hf/config.json"), config.dump());
  const std::string err = error_of([&] { load_model(dir.file("hf")); });
  EXPECT_NE(err.find("hf/model.safetensors: holds "), std::string::npos) << err;
  EXPECT_NE(err.find("the weights do not match the config"), std::string::npos) << err;
}

}  // namespace
}  // namespace chainlm
