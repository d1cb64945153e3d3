// The "phd" section of the model config (SPEC B1, B2): parsing, validation, names, round trips.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace chainlm {
namespace {

nlohmann::json base_json() {
  return nlohmann::json::parse(R"({"dim": 64, "n_layers": 2, "n_heads": 4, "ffn_dim": 96,
                                   "vocab_size": 40, "max_seq_len": 64})");
}

ModelConfig with_phd(const nlohmann::json& phd) {
  nlohmann::json j = base_json();
  j["phd"] = phd;
  return config_from_json(j, "cfg.json");
}

// The error message of a config that must be rejected.
std::string error_of(const nlohmann::json& phd) {
  try {
    with_phd(phd);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted " << phd.dump();
  return "";
}

TEST(PhdConfig, AbsentOrNullIsTheOrdinaryModel) {
  const ModelConfig a = config_from_json(base_json(), "cfg.json");
  EXPECT_EQ(a.phd.repeat, 1);
  EXPECT_FALSE(a.phd.enabled());
  EXPECT_EQ(a.phd.name(), "");
  const ModelConfig b = with_phd(nullptr);
  EXPECT_EQ(b.phd.repeat, 1);
  EXPECT_FALSE(config_to_json(b).contains("phd"));
}

TEST(PhdConfig, ParsesEveryVariantAndNamesIt) {
  ModelConfig c = with_phd({{"repeat", 3}});
  EXPECT_EQ(c.phd.repeat, 3);
  EXPECT_EQ(c.phd.window, 0);
  EXPECT_FALSE(c.phd.shared_positions);
  EXPECT_EQ(c.phd.name(), "PHD-3");
  c = with_phd({{"repeat", 2}, {"window", 16}});
  EXPECT_EQ(c.phd.name(), "PHD-SWA-2-16");
  c = with_phd({{"repeat", 4}, {"window", 16}, {"chunk", 32}, {"position_ids", "shared"}});
  EXPECT_EQ(c.phd.name(), "PHD-CSWA-4-16-32");
  EXPECT_TRUE(c.phd.shared_positions);
  EXPECT_EQ(c.phd.position(5, 2), 5);
  c.phd.shared_positions = false;
  EXPECT_EQ(c.phd.position(5, 2), 22);  // p*K + c
}

TEST(PhdConfig, RoundTripsThroughJsonAndCheckpoints) {
  const ModelConfig c =
      with_phd({{"repeat", 3}, {"window", 5}, {"chunk", 8}, {"position_ids", "shared"}});
  const nlohmann::json j = config_to_json(c);
  const ModelConfig back = config_from_json(j, "roundtrip");
  EXPECT_EQ(back.phd.repeat, 3);
  EXPECT_EQ(back.phd.window, 5);
  EXPECT_EQ(back.phd.chunk, 8);
  EXPECT_TRUE(back.phd.shared_positions);
  EXPECT_EQ(config_to_json(back), j);

  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("chainlm-phdcfg-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Model m(c);
  m.init_random(1);
  save_model(m, dir.string());
  auto loaded = load_model(dir.string());
  EXPECT_EQ(config_to_json(loaded->config()), j);
  fs::remove_all(dir);
}

TEST(PhdConfig, RejectsBadInputNamingTheFieldAndRule) {
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  std::string e = error_of({{"repeat", 0}});
  EXPECT_TRUE(has(e, "'phd.repeat'") && has(e, ">= 1")) << e;
  // A million repeats: generate used 7 GB and never printed a token; eval died of bad_alloc.
  e = error_of({{"repeat", 1000000}});
  EXPECT_TRUE(has(e, "'phd.repeat' (K) is 1000000, more than 64")) << e;
  EXPECT_NO_THROW(with_phd({{"repeat", 64}}));
  e = error_of({{"repeat", 2}, {"window", -1}});
  EXPECT_TRUE(has(e, "'phd.window'") && has(e, ">= 0")) << e;
  e = error_of({{"repeat", 2}, {"chunk", 32}});
  EXPECT_TRUE(has(e, "'phd.chunk'") && has(e, "needs 'phd.window' > 0")) << e;
  e = error_of({{"repeat", 2}, {"window", 16}, {"chunk", -2}});
  EXPECT_TRUE(has(e, "'phd.chunk'") && has(e, ">= 0")) << e;
  // max_seq_len 64: the hidden stream of K = 2 holds 64 tokens.
  e = error_of({{"repeat", 2}, {"window", 64}});
  EXPECT_TRUE(has(e, "'phd.window'") && has(e, "larger than the sequence") && has(e, "64")) << e;
  EXPECT_NO_THROW(with_phd({{"repeat", 2}, {"window", 63}}));
  e = error_of({{"repeat", 2}, {"window", 16}, {"chunk", 65}});
  EXPECT_TRUE(has(e, "'phd.chunk'") && has(e, "larger than the sequence")) << e;
  // CSWA: the window stays inside its chunk, whose hidden stream holds (K-1)*C tokens. A larger
  // one was accepted and named PHD-CSWA-2-16-8, which `info` described as caching 16.
  e = error_of({{"repeat", 2}, {"window", 16}, {"chunk", 8}});
  EXPECT_TRUE(has(e, "'phd.window'") && has(e, "larger than a chunk") &&
              has(e, "(repeat-1)*chunk = 8"))
      << e;
  e = error_of({{"repeat", 3}, {"window", 16}, {"chunk", 8}});
  EXPECT_TRUE(has(e, "(repeat-1)*chunk = 16")) << e;
  EXPECT_NO_THROW(with_phd({{"repeat", 3}, {"window", 15}, {"chunk", 8}}));
  e = error_of({{"repeat", 1}, {"window", 4}});
  EXPECT_TRUE(has(e, "'phd.window'") && has(e, "repeat' >= 2")) << e;
  e = error_of({{"repeat", 2}, {"position_ids", "rotated"}});
  EXPECT_TRUE(has(e, "'position_ids'") && has(e, "rotated")) << e;
  e = error_of({{"repeat", 2}, {"windw", 4}});
  EXPECT_TRUE(has(e, "unknown field 'windw'")) << e;
  e = error_of({{"repeat", "two"}});
  EXPECT_TRUE(has(e, "'repeat'") && has(e, "wrong type")) << e;
  e = error_of(3);
  EXPECT_TRUE(has(e, "'phd' must be an object")) << e;
}

}  // namespace
}  // namespace chainlm
