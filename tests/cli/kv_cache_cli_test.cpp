// --kv-cache on generate, serve's and bench's sessions (infer/kv_cache.h): auto picks f16 for
// bf16 weights and f32 for fp32 ones, the commands say what they ran, half the bytes, and bad
// values or a 16-bit cache for a PHD model are refused by name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

class KvCacheCli : public ::testing::Test {
 protected:
  void SetUp() override {
    data = dir.file("data");
    test::make_byte_data_dir(test::numbered_lines("a cache holds what attention reads ", 300), data, 0.2);
    const std::string config = dir.file("config.json");
    write_bytes(config, R"({"dim": 32, "n_layers": 2, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258,
                           "n_kv_heads": 2, "chains": [1, 1], "kv_share": true, "max_seq_len": 48})");
    run = dir.file("run");
    auto r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data) + " --out " +
                                  quote(run) + " --steps 30 --batch-size 4 --seq-len 32 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  nlohmann::json generate(const std::string& extra) {
    auto r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt 'a cache' --max-tokens 8 --temperature 0 --json " +
                                  extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
  TempDir dir;
  std::string data, run;
};

TEST_F(KvCacheCli, GenerateSaysWhichCacheItRanAndAutoFollowsTheWeights) {
  const nlohmann::json f32 = generate(""), f16 = generate("--kv-cache f16"), bf16 = generate("--precision bf16");
  EXPECT_EQ(f32["kv_cache"], "f32");
  EXPECT_EQ(f16["kv_cache"], "f16");
  EXPECT_EQ(bf16["kv_cache"], "f16");
  EXPECT_EQ(generate("--precision bf16 --kv-cache f32")["kv_cache"], "f32");
  ASSERT_EQ(f16["tokens"].size(), 8u);
}

TEST_F(KvCacheCli, BenchDecodeReadsHalfTheCacheBytes) {
  auto bench = [&](const std::string& kv) {
    auto r = run_chainlm(dir, "bench decode --model " + quote(run) + " --prompt-tokens 16 --tokens 4 --threads 1 --kv-cache " + kv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  };
  const nlohmann::json a = bench("f32"), b = bench("f16");
  EXPECT_EQ(a["kv_cache"], "f32");
  EXPECT_EQ(b["kv_cache"], "f16");
  EXPECT_EQ(2 * b["kv_cache_bytes"].get<long>(), a["kv_cache_bytes"].get<long>());
  EXPECT_EQ(2 * b["kv_cache_bytes_allocated"].get<long>(), a["kv_cache_bytes_allocated"].get<long>());
}

TEST_F(KvCacheCli, InfoCountsTheCacheInferenceGivesTheModel) {
  const std::string q = dir.file("q8");
  auto qr = run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --out " + quote(q));
  ASSERT_EQ(qr.exit_code, 0) << qr.err;
  auto info = [&](const std::string& m) {
    auto r = run_chainlm(dir, "info --model " + quote(m) + " --json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  };
  const nlohmann::json fp32 = info(run), q8 = info(q);
  EXPECT_EQ(fp32["kv_cache"], "f32");
  EXPECT_EQ(q8["kv_cache"], "f16");
  for (int k = 0; k < 2; ++k)
    EXPECT_EQ(2 * q8["sub_models"][k]["kv_cache_bytes_per_token"].get<long>(),
              fp32["sub_models"][k]["kv_cache_bytes_per_token"].get<long>());
}

TEST_F(KvCacheCli, BadValuesAndA16BitCacheForPhdAreRefusedByName) {
  auto bad = run_chainlm(dir, "generate --model " + quote(run) + " --prompt a --kv-cache f8");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--kv-cache"), std::string::npos) << bad.err;
  const std::string phd = dir.file("phd.json");
  write_bytes(phd, R"({"dim": 32, "n_layers": 2, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258, "max_seq_len": 48,
                      "phd": {"repeat": 2, "window": 4, "chunk": 8}})");
  for (const char* cmd : {"bench decode --tokens 4", "bench prefill"}) {
    auto r = run_chainlm(dir, std::string(cmd) + " --config " + quote(phd) + " --prompt-tokens 8 --kv-cache f16");
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_NE(r.err.find("PHD"), std::string::npos) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("--kv-cache f16"), std::string::npos) << cmd << ": " << r.err;
  }
}

}  // namespace
}  // namespace chainlm
