#pragma once
// The fixture and helpers of the `chainlm train` crash-safety tests (crash_safety_test.cpp:
// kills, full disks, read-only directories; nonfinite_training_test.cpp: NaN gradients,
// divergence, a shard truncated mid-run, MPI): a small CoLM config and its data, the
// arguments of a run and of its resume, and a run's final state compared bit for bit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../train/train_test_util.h"
#include "cli/run_cli.h"
#include "io/safetensors.h"
#include "spawn_process.h"

namespace chainlm::crash_safety_test {

// The test files take these with `using namespace crash_safety_test`.
namespace fs = std::filesystem;
using testing::Args;
using testing::contains;
using testing::Env;
using testing::finish;
using testing::Outcome;
using testing::read_bytes;
using testing::spawn;
using testing::TempDir;
using testing::write_bytes;

inline const char* const kConfig =
    R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 258,
        "chains": [1, 1], "kv_share": true, "max_seq_len": 32})";

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// What a killed writer may leave behind; a finished run must have none of it.
inline std::vector<std::string> leftovers(const fs::path& run) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".tmp-", 0) == 0 || n.rfind(".old-", 0) == 0 || contains(n, ".tmp.") ||
        contains(n, ".write-probe"))
      names.push_back(n);
  }
  return names;
}

inline std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

// The final state of a run: its latest checkpoint's weights and moments (bytes), and the
// per-step training and validation losses of metrics.jsonl.
struct RunState {
  std::string latest, weights, moments;
  std::map<long, double> loss;
  std::map<long, std::vector<double>> val;
  std::map<long, std::string> skipped;
};

inline RunState read_state(const fs::path& run) {
  RunState s;
  s.latest = trim(read_bytes((run / "latest").string()));
  s.weights = read_bytes((run / s.latest / "model.safetensors").string());
  s.moments = read_bytes((run / s.latest / "optimizer.safetensors").string());
  for (const nlohmann::json& j : test::read_metrics_lines(run.string())) {
    const long step = j.at("step").get<long>();
    if (j.contains("loss")) s.loss[step] = j["loss"].get<double>();
    if (j.contains("val_loss")) s.val[step] = j["val_loss"].get<std::vector<double>>();
    if (j.contains("skipped")) s.skipped[step] = j["nonfinite"].get<std::string>();
  }
  return s;
}

// Bit-identical: the same bytes of weights and moments, the same doubles in the log.
inline void expect_identical(const RunState& got, const RunState& want, const std::string& what) {
  EXPECT_EQ(got.latest, want.latest) << what;
  EXPECT_TRUE(got.weights == want.weights) << what << ": final weights differ";
  EXPECT_TRUE(got.moments == want.moments) << what << ": final optimizer moments differ";
  EXPECT_EQ(got.loss, want.loss) << what << ": per-step losses differ";
  EXPECT_EQ(got.val, want.val) << what << ": validation losses differ";
  EXPECT_EQ(got.skipped, want.skipped) << what << ": skipped steps differ";
}

// Every float of every tensor of a safetensors file is finite.
inline void expect_all_finite(const std::string& file) {
  SafetensorsReader reader(file);
  for (const auto& e : reader.entries()) {
    const Tensor t = reader.read_f32(e.name);
    for (long i = 0; i < (long)t.numel(); ++i)
      ASSERT_TRUE(std::isfinite(t.data[i])) << file << ": " << e.name << "[" << i << "]";
  }
}

// Every checkpoint directory of a run holds only finite weights and moments.
inline int expect_checkpoints_finite(const fs::path& run) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || (name.rfind("step-", 0) != 0 && name.rfind(".tmp-", 0) != 0)) continue;
    for (const char* f : {"model.safetensors", "optimizer.safetensors"})
      if (fs::exists(e.path() / f)) expect_all_finite((e.path() / f).string());
    ++n;
  }
  return n;
}

class CrashSafety : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(400, "the quick brown fox jumps over the lazy dog ");
    config = dir.file("config.json");
    write_bytes(config, kConfig);
  }

  // A checkpoint at every step, a validation every third: kills land in writes often.
  Args train_args(const std::string& run, long steps, const Args& extra = {}) const {
    Args a = {CHAINLM_BINARY, "train",
              "--config",     config,
              "--data",       data,
              "--out",        run,
              "--steps",      std::to_string(steps),
              "--batch-size", "2",
              "--seq-len",    "16",
              "--save-every", "1",
              "--eval-every", "3",
              "--threads",    "1",
              "--quiet"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  Args resume_args(const std::string& run, long steps, const Args& extra = {}) const {
    Args a = {CHAINLM_BINARY,        "train",     "--out", run,      "--resume", "--steps",
              std::to_string(steps), "--threads", "1",     "--quiet"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // Trains a fresh run, or resumes it when it has a checkpoint.
  Args continue_args(const std::string& run, long steps) const {
    return fs::exists(fs::path(run) / "latest") ? resume_args(run, steps) : train_args(run, steps);
  }
  Outcome run(const Args& args, const Env& env = {}) const {
    const std::string out = dir.file("out.txt"), err = dir.file("err.txt");
    return finish(spawn(args, env, out, err), out, err);
  }
  // The uninterrupted run everything is compared with.
  RunState reference(long steps, const Args& extra = {}) {
    const std::string ref = dir.file("reference");
    fs::remove_all(ref);
    const auto start = std::chrono::steady_clock::now();
    const Outcome r = run(train_args(ref, steps, extra));
    reference_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(r.code, 0) << r.err;
    return read_state(ref);
  }
  // `chainlm info` loads the checkpoint `latest` names.
  void expect_loadable(const std::string& run, const std::string& what) const {
    const Outcome r = run_info(run);
    EXPECT_EQ(r.code, 0) << what << ": the latest checkpoint does not load: " << r.err;
  }
  Outcome run_info(const std::string& path) const {
    return run({CHAINLM_BINARY, "info", "--model", path});
  }

  std::string config;
  double reference_seconds = 0;
};

}  // namespace chainlm::crash_safety_test
