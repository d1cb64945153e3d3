// Data-parallel training under mpirun (2 ranks on this machine): the same run as one process,
// resume on another number of ranks, a killed rank, errors, and bench train's communication
// figures (docs/distributed.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "../train/train_test_util.h"
#include "core/error.h"
#include "model/checkpoint.h"
#include "run_mpi.h"
#include "spawn_process.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::run_chainlm_mpi;
using testing::RunResult;
using testing::TempDir;
using testing::write_bytes;

// Three chains, CoLM-Air; trained on the loss of every sub-model.
const char* kChainConfig =
    R"({"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 64, "vocab_size": 258,
        "chains": [1, 1, 2], "kv_share": true, "max_seq_len": 32})";
const char* kPhdConfig =
    R"({"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 64, "vocab_size": 258,
        "chains": [1, 1], "kv_share": true, "max_seq_len": 32,
        "phd": {"repeat": 2, "window": 4, "chunk": 8, "position_ids": "extended"}})";

struct Metrics {
  std::map<long, double> loss;
  std::map<long, std::vector<double>> chain_loss, val_loss;
  std::map<long, nlohmann::json> step_line;
};

Metrics read_metrics(const std::string& run) {
  Metrics m;
  for (nlohmann::json& j : test::read_metrics_lines(run)) {
    const long s = j["step"].get<long>();
    if (j.contains("loss")) {
      m.loss[s] = j["loss"].get<double>();
      std::vector<double> c;
      for (const auto& x : j["chain_loss"]) c.push_back(x.is_null() ? NAN : x.get<double>());
      m.chain_loss[s] = c;
      m.step_line[s] = j;
    }
    if (j.contains("val_loss")) m.val_loss[s] = j["val_loss"].get<std::vector<double>>();
  }
  return m;
}

// Same steps, losses within tol (each sub-model's too), validation losses within tol.
void expect_same_trajectory(const Metrics& a, const Metrics& b, double tol, const std::string& what) {
  ASSERT_EQ(a.loss.size(), b.loss.size()) << what;
  for (const auto& [s, l] : a.loss) {
    ASSERT_TRUE(b.loss.count(s)) << what << " step " << s;
    EXPECT_NEAR(l, b.loss.at(s), tol) << what << " step " << s;
    const auto& ca = a.chain_loss.at(s);
    const auto& cb = b.chain_loss.at(s);
    ASSERT_EQ(ca.size(), cb.size());
    for (size_t i = 0; i < ca.size(); ++i) {
      EXPECT_EQ(std::isnan(ca[i]), std::isnan(cb[i])) << what << " step " << s << " chain " << i;
      if (!std::isnan(ca[i])) {
        EXPECT_NEAR(ca[i], cb.at(i), tol) << what << " step " << s << " chain " << i;
      }
    }
  }
  ASSERT_EQ(a.val_loss.size(), b.val_loss.size()) << what;
  for (const auto& [s, v] : a.val_loss)
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], b.val_loss.at(s).at(i), tol) << what << " val step " << s;
}

float max_weight_difference(const std::string& run_a, const std::string& run_b) {
  auto a = load_model(run_a), b = load_model(run_b);
  EXPECT_EQ(a->params().size(), b->params().size());
  float d = 0;
  for (size_t i = 0; i < a->params().size(); ++i)
    d = std::max(d, std::fabs(a->params().values()[i] - b->params().values()[i]));
  return d;
}

bool same_weight_bits(const std::string& run_a, const std::string& run_b) {
  auto a = load_model(run_a), b = load_model(run_b);
  return a->params().size() == b->params().size() &&
         std::memcmp(a->params().values(), b->params().values(), a->params().size() * sizeof(float)) == 0;
}

class DistributedTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    data = dir.file("data");
    std::string text;
    for (int i = 0; i < 400; ++i)
      text += "the quick brown fox jumps over the lazy dog " + std::to_string(i * 7 % 113) + "\n";
    test::make_byte_data_dir(text, data, 0.2);
    write_bytes(dir.file("chains.json"), kChainConfig);
    write_bytes(dir.file("phd.json"), kPhdConfig);
  }
  std::string train_args(const std::string& config, const std::string& out, const std::string& extra) const {
    return "train --config " + quote(dir.file(config)) + " --data " + quote(data) + " --out " +
           quote(out) + " --seq-len 16 --lr 3e-3 --warmup 2 --threads 1 --quiet " + extra;
  }
  // A 2-rank training of a million steps, saving every 20, in a shell of its own (its pid): for
  // the tests that stop or kill it midway.
  pid_t start_long_run(const std::string& run, const std::string& err) const {
    const std::string cmd =
        testing::mpirun_command(2, 300) + " '" + CHAINLM_BINARY + "' " +
        train_args("chains.json", run,
                   "--steps 1000000 --batch-size 4 --save-every 20 --eval-every 1000000") +
        " >/dev/null 2>'" + err + "'";
    const pid_t shell = fork();
    if (shell == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
      _exit(127);
    }
    return shell;
  }
  TempDir dir;
  std::string data;
};

// The issue's check: 2 ranks x micro-batch b follow 1 rank x 2b for 5 steps (losses within
// 1e-5, the same final weights), for a multi-chain objective, chain tuning and PHD. Splitting
// the batch further (micro-batches on every rank) changes nothing either, and summing each
// layer's gradients during the backward (--overlap-comm) changes not a bit.
TEST_F(DistributedTrain, TwoRanksFollowOneRankWithTwiceTheMicroBatch) {
  struct Case {
    std::string name, config, extra;
  };
  const std::vector<Case> cases = {
      {"multi-chain loss", "chains.json", "--chain-loss-weights 1,1,1"},
      {"chain tuning", "chains.json", "--freeze-chains 1 --chain-loss-weights 0,1,1"},
      {"PHD", "phd.json", "--chain-loss-weights 1,1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string one = dir.file("one"), two = dir.file("two"), acc = dir.file("acc"),
                      overlap = dir.file("overlap");
    for (const auto& d : {one, two, acc, overlap}) fs::remove_all(d);
    const std::string common = "--steps 5 --batch-size 4 --eval-every 5 --eval-windows 6 " + c.extra;
    RunResult r = run_chainlm(dir, train_args(c.config, one, common + " --micro-batch 4"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run_chainlm_mpi(dir, 2, train_args(c.config, two, common + " --micro-batch 2"));
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    r = run_chainlm_mpi(dir, 2, train_args(c.config, acc, common + " --micro-batch 1 --bucket-mb 0.01"));
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    r = run_chainlm_mpi(dir, 2, train_args(c.config, overlap, common + " --micro-batch 1 --overlap-comm --bucket-mb 0.01"));
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;

    const Metrics m1 = read_metrics(one), m2 = read_metrics(two);
    ASSERT_EQ(m1.loss.size(), 5u);
    expect_same_trajectory(m1, m2, 1e-5, "2 ranks x 2 vs 1 rank x 4");
    expect_same_trajectory(m1, read_metrics(acc), 1e-5, "2 ranks x 2 x 1 vs 1 rank x 4");
    double loss_diff = 0;
    for (const auto& [s, l] : m1.loss) loss_diff = std::max(loss_diff, std::fabs(l - m2.loss.at(s)));
    const float weight_diff = max_weight_difference(one, two);
    std::printf("%s: 1 rank x 4 vs 2 ranks x 2: max loss difference %.2e, max weight difference %.2e\n",
                c.name.c_str(), loss_diff, weight_diff);
    EXPECT_LE(weight_diff, 1e-5f);
    EXPECT_LE(max_weight_difference(one, acc), 1e-5f);
    // Only rank 0 logs, and its step lines say how many ranks computed them.
    EXPECT_EQ(m2.step_line.at(1)["ranks"], 2);
    EXPECT_TRUE(m2.step_line.at(1).contains("comm_ms"));
    EXPECT_FALSE(m1.step_line.at(1).contains("ranks"));

    // Overlap (during the last micro-batch's backward) reduces the same buckets: bit-identical
    // to the run without it. (Small buckets: many per layer.)
    const Metrics ma = read_metrics(acc), mo = read_metrics(overlap);
    for (const auto& [s, l] : ma.loss) EXPECT_EQ(l, mo.loss.at(s)) << "step " << s;
    EXPECT_TRUE(same_weight_bits(acc, overlap));

    if (c.name == "chain tuning") {
      // Frozen parameters are never touched, by any rank: bit-identical to the 1-rank run's
      // (both start from init_random(seed)).
      auto a = load_model(one), b = load_model(two);
      a->set_freeze({1, false});
      for (int i = 0; i < (int)a->params().infos().size(); ++i) {
        const ParamInfo& p = a->params().info(i);
        if (!p.frozen()) continue;
        EXPECT_EQ(0, std::memcmp(a->params().value(i), b->params().value(i), p.numel() * sizeof(float))) << p.name;
      }
    }
  }
}

// A checkpoint written by a 2-rank run resumes on 1 rank and the other way round; both
// continue the uninterrupted 1-rank run (the global batch and its rows do not depend on the
// number of ranks). The first part stops at step 3 of a 6-step schedule (--lr-schedule-steps 6,
// as a run of 6 steps interrupted there), so extended to 6 it is the 6-step run.
TEST_F(DistributedTrain, ResumesOnADifferentNumberOfRanks) {
  const std::string ref = dir.file("ref"), a = dir.file("a"), b = dir.file("b");
  const std::string common = "--batch-size 4 --eval-every 3 --eval-windows 6 --chain-loss-weights 1,1,1";
  ASSERT_EQ(run_chainlm(dir, train_args("chains.json", ref, common + " --steps 6")).exit_code, 0);

  // 2 ranks to step 3, then 1 rank to step 6.
  RunResult r = run_chainlm_mpi(dir, 2, train_args("chains.json", a, common + " --steps 3 --lr-schedule-steps 6"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "train --out " + quote(a) + " --resume --steps 6 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Not bit-identical (the gradients are summed over one rank now), and said so: the warning
  // named the thread count alone, whose advice did not bring the bits back.
  EXPECT_NE(r.err.find("resume: the steps so far ran on 2 ranks of 1 thread(s)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("(mpirun -np 2, --threads 1 and "), std::string::npos) << r.err;
  // 1 rank to step 3 (micro-batches of 4), then 2 ranks to step 6 (micro-batches of 1).
  ASSERT_EQ(run_chainlm(dir, train_args("chains.json", b, common + " --steps 3 --lr-schedule-steps 6 --micro-batch 4")).exit_code, 0);
  r = run_chainlm_mpi(dir, 2, "train --out " + quote(b) + " --resume --steps 6 --micro-batch 1 --threads 1 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_bytes(b + "/latest"), "step-00000006\n");

  const Metrics mref = read_metrics(ref);
  ASSERT_EQ(mref.loss.size(), 6u);
  expect_same_trajectory(mref, read_metrics(a), 1e-5, "2 ranks then 1");
  expect_same_trajectory(mref, read_metrics(b), 1e-5, "1 rank then 2");
  EXPECT_LE(max_weight_difference(ref, a), 1e-5f);
  EXPECT_LE(max_weight_difference(ref, b), 1e-5f);
}

// The pid of the chainlm process of `rank` whose command line mentions `marker`, or -1.
pid_t find_rank_process(const std::string& marker, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_bytes(e.path().string() + "/cmdline");
    // Not the shell, timeout or mpirun: their command lines name mpirun.
    if (cmdline.find(marker) == std::string::npos || cmdline.find("mpirun") != std::string::npos) continue;
    std::string env = read_bytes(e.path().string() + "/environ");
    for (size_t p = 0; p < env.size();) {
      const size_t end = env.find('\0', p);
      if (env.compare(p, (end == std::string::npos ? env.size() : end) - p, want) == 0)
        return (pid_t)std::stol(name);
      if (end == std::string::npos) break;
      p = end + 1;
    }
  }
  return -1;
}

// Rank 1 is killed (SIGKILL, as the OOM killer would) in the middle of a long run: mpirun ends
// the job within seconds with a non-zero exit naming the rank, and `latest` names a complete
// checkpoint that loads and resumes.
TEST_F(DistributedTrain, AKilledRankEndsTheJobAndLeavesTheLastCheckpoint) {
  const std::string run = dir.file("killed-run");
  const std::string err = dir.file("killed.err");
  const pid_t shell = start_long_run(run, err);
  ASSERT_GE(shell, 0);
  using clock = std::chrono::steady_clock;
  // Wait for a checkpoint beyond the first, then kill rank 1.
  int status = 0;
  const auto started = clock::now();
  pid_t victim = -1;
  while (clock::now() - started < std::chrono::seconds(90)) {
    if (waitpid(shell, &status, WNOHANG) == shell) FAIL() << "the job ended early: " << read_bytes(err);
    const std::string latest = read_bytes(run + "/latest");
    if (latest.rfind("step-", 0) == 0 && std::stol(latest.substr(5)) >= 40) victim = find_rank_process(run, 1);
    if (victim > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(victim, 0) << "no rank 1 process found; stderr: " << read_bytes(err);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const auto killed = clock::now();
  status = testing::wait_for_exit_or_kill(shell, 30);
  ASSERT_NE(status, -1) << "the job did not end within 30 s of rank 1's death";
  const double seconds = std::chrono::duration<double>(clock::now() - killed).count();
  std::printf("job ended %.2f s after rank 1 was killed\n", seconds);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(WEXITSTATUS(status), 124) << "ended by the test's timeout, not by mpirun";
  const std::string message = read_bytes(err);
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;

  // `latest` names a complete checkpoint: it loads, and the run resumes from it.
  const std::string latest = read_bytes(run + "/latest");
  ASSERT_EQ(latest.rfind("step-", 0), 0u) << latest;
  const long step = std::stol(latest.substr(5));
  EXPECT_GE(step, 40);
  EXPECT_EQ(step % 20, 0);
  EXPECT_NO_THROW(load_model(run));
  RunResult r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps " + std::to_string(step + 2) +
                                     " --threads 1 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  char name[32];
  std::snprintf(name, sizeof name, "step-%08ld\n", step + 2);
  EXPECT_EQ(read_bytes(run + "/latest"), name);
}

// Ctrl-C under mpirun (which hands it to every rank): the run stops and saves, and the way on it
// prints is the same launch, ranks and threads (it said "chainlm train --out R --resume", which
// went on in one process on every core, not bit for bit).
TEST_F(DistributedTrain, AStoppedRunSaysToResumeUnderMpirun) {
  const std::string run = dir.file("stopped-run"), err = dir.file("stopped.err");
  const pid_t shell = start_long_run(run, err);
  ASSERT_GE(shell, 0);
  int status = 0;
  const auto started = std::chrono::steady_clock::now();
  pid_t ranks[2] = {-1, -1};
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(90)) {
    if (waitpid(shell, &status, WNOHANG) == shell)
      FAIL() << "the job ended early: " << read_bytes(err);
    if (read_bytes(run + "/latest").rfind("step-", 0) == 0)
      for (int r = 0; r < 2; ++r) ranks[r] = find_rank_process(run, r);
    if (ranks[0] > 0 && ranks[1] > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(ranks[0] > 0 && ranks[1] > 0) << read_bytes(err);
  for (pid_t p : ranks) kill(p, SIGINT);
  ASSERT_EQ(waitpid(shell, &status, 0), shell);
  const std::string message = read_bytes(err);
  EXPECT_NE(message.find("training stopped by SIGINT"), std::string::npos) << message;
  EXPECT_NE(message.find("Continue with: mpirun -np 2 <your mpirun options> chainlm train --out " +
                         run + " --resume --threads 1\n"),
            std::string::npos)
      << message;
}

// Errors every rank meets (bad options, a missing config, a diverging loss) end the job at
// once with one message and a non-zero exit; nothing is written.
TEST_F(DistributedTrain, ErrorsEndEveryRankWithOneMessage) {
  const std::string run = dir.file("bad");
  RunResult r = run_chainlm_mpi(dir, 2, train_args("chains.json", run, "--steps 2 --batch-size 3"), 60);
  EXPECT_NE(r.exit_code, 0);
  // A new run is told to pick another batch (it was told only about resuming, a docs trial).
  const std::string expect = "multiple of the number of ranks (2): give a multiple of 2";
  const size_t at = r.err.find(expect);
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(expect, at + 1), std::string::npos) << "printed twice:\n" << r.err;
  EXPECT_EQ(r.err.find("resume it on"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run + "/latest"));
  // A run resumed on such a rank count cannot change its batch: the ways on are named, and no
  // other --batch-size is asked for (a resume refuses one).
  const std::string odd = dir.file("odd");
  ASSERT_EQ(run_chainlm(dir, train_args("chains.json", odd, "--steps 1 --batch-size 3")).exit_code,
            0);
  r = run_chainlm_mpi(dir, 2,
                      "train --out " + quote(odd) + " --resume --steps 2 --threads 1 --quiet", 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(
      r.err.find(
          "multiple of the number of ranks (2): a resumed run keeps its batch: resume it on 1, 3 "
          "rank(s), or start a new run from its checkpoint with --init"),
      std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("give a multiple"), std::string::npos) << r.err;

  // bench train's own checks: one message too (each rank printed it).
  r = run_chainlm_mpi(dir, 2,
                      "bench train --config " + quote(dir.file("chains.json")) +
                          " --batch-size 7 --seq-len 16 --steps 1 --threads 1",
                      60);
  EXPECT_NE(r.exit_code, 0);
  const std::string bench_expect = "--batch-size 7 must be a multiple of the 2 ranks";
  const size_t bench_at = r.err.find(bench_expect);
  ASSERT_NE(bench_at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(bench_expect, bench_at + 1), std::string::npos) << "printed twice:\n"
                                                                       << r.err;
  // A command that writes, under mpirun: every rank ran it whole (tokenizer train's both wrote
  // --out).
  r = run_chainlm_mpi(dir, 2,
                      "tokenizer train --corpus " + quote(data + "/../corpus.txt") +
                          " --vocab-size 300 --out " + quote(dir.file("t.model")),
                      60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("chainlm tokenizer under mpirun with 2 ranks: it is not data-parallel"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir.file("t.model")));
  r = run_chainlm_mpi(dir, 2, train_args("missing.json", run, "--steps 2 --batch-size 4"), 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("missing.json"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run + "/latest"));

  // A run directory another process trains into, met by rank 0 alone (the run directory is on
  // its machine): the message names the rank and machine, as every startup error's does.
  const std::string locked = dir.file("locked");
  fs::create_directories(locked);
  const int fd = ::open(locked.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // as a training process holds it
  r = run_chainlm_mpi(dir, 2, train_args("chains.json", locked, "--steps 2 --batch-size 4"), 60);
  ::close(fd);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("rank 0 of 2 ("), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("another process is training into " + locked), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(locked + "/latest"));

  // A diverging run: every rank sees the same non-finite sum and stops at the same step.
  r = run_chainlm_mpi(dir, 2,
                      "train --config " + quote(dir.file("chains.json")) + " --data " + quote(data) + " --out " +
                          quote(run) + " --steps 20 --batch-size 4 --seq-len 16 --lr 1e30 --grad-clip 0 --threads 1 --quiet",
                      60);
  EXPECT_NE(r.exit_code, 0);
  const size_t nan = r.err.find("not finite");
  ASSERT_NE(nan, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("not finite", nan + 1), std::string::npos) << "printed twice:\n" << r.err;
  EXPECT_EQ(r.err.find("MPI_ABORT"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run + "/latest"));
}

// One machine holding a stale copy of the data (here: rank 1 in a mount namespace where another
// data directory is mounted over the path) trained silently to other losses. The ranks compare
// their shards' fingerprints before step 1, and the job ends naming the rank and its machine.
TEST_F(DistributedTrain, RanksReadingOtherDataAreRefusedNamingTheRank) {
  if (std::system("unshare -m true >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "needs unshare -m (root) to give one rank other data on one machine";
  const std::string other = dir.file("other");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "a different corpus, line " + std::to_string(i) + "\n";
  test::make_byte_data_dir(text, other, 0.2);
  const std::string wrap = dir.file("other_data.sh");
  write_bytes(wrap, "#!/bin/sh\nexec unshare -m sh -c 'mount --bind " + other + " " + data +
                        " && exec \"$0\" \"$@\"' \"$@\"\n");
  fs::permissions(wrap, fs::perms::owner_all);
  const std::string args =
      " " + train_args("chains.json", dir.file("run"), "--steps 2 --batch-size 4");
  const std::string cmd = testing::mpirun_command(2, 60) + " -np 1 '" + CHAINLM_BINARY + "'" +
                          args + " : -np 1 " + quote(wrap) + " '" + CHAINLM_BINARY + "'" + args +
                          " >/dev/null 2>" + quote(dir.file("err.txt"));
  const int status = std::system(cmd.c_str());
  EXPECT_NE(status, 0);
  const std::string err = read_bytes(dir.file("err.txt"));
  EXPECT_NE(err.find("rank 1 of 2 ("), std::string::npos) << err;
  EXPECT_NE(err.find("differs from rank 0's"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir.file("run/latest")));
}

// The fingerprints sample a shard over 4 MiB in 64 blocks: a copy that differs between them (one
// token here) trained to other losses without a word. The ranks compare the whole shards' CRCs,
// made by the token check every run does at start.
TEST_F(DistributedTrain, RanksWhoseDataDiffersBetweenTheSampledBlocksAreRefused) {
  if (std::system("unshare -m true >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "needs unshare -m (root) to give one rank other data on one machine";
  const std::string big = dir.file("big"), copy = dir.file("copy");
  std::string text;
  for (int i = 0; text.size() < (5u << 20); ++i)
    text += "a long corpus for two ranks, line " + std::to_string(i) + "\n";
  test::make_byte_data_dir(text, big, 0.1);
  fs::copy(big, copy, fs::copy_options::recursive);
  const std::string shard = copy + "/train.bin";
  const uint64_t bytes = fs::file_size(shard);
  ASSERT_GT(bytes, 64u * 65536u);
  // Past the end of the 11th sampled block, well before the 12th: a token's first byte.
  uint64_t at = (bytes - 65536) * 10 / 63 + 65536 + 1000;
  at += (at - 32) % 2;
  ASSERT_LT(at + 2, (bytes - 65536) * 11 / 63);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg((std::streamoff)at);
    char c = 0;
    f.read(&c, 1);
    f.seekp((std::streamoff)at);
    c = c == 'a' ? 'b' : 'a';
    f.write(&c, 1);
  }
  const std::string wrap = dir.file("copy_data.sh");
  write_bytes(wrap, "#!/bin/sh\nexec unshare -m sh -c 'mount --bind " + copy + " " + big +
                        " && exec \"$0\" \"$@\"' \"$@\"\n");
  fs::permissions(wrap, fs::perms::owner_all);
  const std::string args = " train --config " + quote(dir.file("chains.json")) + " --data " +
                           quote(big) + " --out " + quote(dir.file("run")) +
                           " --seq-len 16 --threads 1 --quiet --steps 2 --batch-size 4";
  const std::string cmd = testing::mpirun_command(2, 60) + " -np 1 '" + CHAINLM_BINARY + "'" +
                          args + " : -np 1 " + quote(wrap) + " '" + CHAINLM_BINARY + "'" + args +
                          " >/dev/null 2>" + quote(dir.file("err.txt"));
  EXPECT_NE(std::system(cmd.c_str()), 0);
  const std::string err = read_bytes(dir.file("err.txt"));
  EXPECT_NE(err.find("rank 1 of 2 ("), std::string::npos) << err;
  EXPECT_NE(err.find("differs from rank 0's"), std::string::npos) << err;
  EXPECT_NE(err.find("train.bin crc32 "), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir.file("run/latest")));
}

// mpirun's MPMD form gives rank 1 its own options: every rank runs with rank 0's, which used
// to go unsaid (a user trial). Each rank's own (--memory-limit) makes no warning.
TEST_F(DistributedTrain, RanksGivenOtherOptionsAreWarnedOf) {
  const std::string base =
      " " + train_args("chains.json", dir.file("run"), "--steps 2 --batch-size 4");
  const std::string cmd = testing::mpirun_command(2, 60) + " -np 1 '" + CHAINLM_BINARY + "'" +
                          base + " : -np 1 '" + CHAINLM_BINARY + "'" + base +
                          " --seed 9 --memory-limit 8G >/dev/null 2>" + quote(dir.file("err.txt"));
  const int status = std::system(cmd.c_str());
  const std::string err = read_bytes(dir.file("err.txt"));
  EXPECT_EQ(status, 0) << err;
  const size_t at = err.find("warning: the ranks were given different options (rank 1 was given ");
  ASSERT_NE(at, std::string::npos) << err;
  const std::string line = err.substr(at, err.find('\n', at) - at);
  EXPECT_NE(line.find("--seed 9"), std::string::npos) << line;
  EXPECT_NE(line.find("every rank runs with rank 0's"), std::string::npos) << line;
  EXPECT_EQ(line.substr(0, line.find(")")).find("--memory-limit"), std::string::npos)
      << "each rank's own: " << line;
  EXPECT_TRUE(fs::exists(dir.file("run/latest")));
  // The same options on every rank but --threads: no warning.
  const std::string resume =
      " " + train_args("chains.json", dir.file("run"), "--steps 3 --batch-size 4 --resume");
  const std::string same = testing::mpirun_command(2, 60) + " -np 1 '" + CHAINLM_BINARY + "'" +
                           resume + " : -np 1 '" + CHAINLM_BINARY + "'" + resume +
                           " --memory-limit 8G >/dev/null 2>" + quote(dir.file("err2.txt"));
  EXPECT_EQ(std::system(same.c_str()), 0) << read_bytes(dir.file("err2.txt"));
  EXPECT_EQ(read_bytes(dir.file("err2.txt")).find("different options"), std::string::npos)
      << read_bytes(dir.file("err2.txt"));
}

// A rank given a bad value of one of its own options (mpirun's MPMD form) stopped alone, before
// the first collective, and left the other rank waiting for it until mpirun was killed (a user
// trial: train and bench train). Every rank now exits 1, with the failing rank's message.
TEST_F(DistributedTrain, ARanksOwnBadOptionEndsEveryRank) {
  const std::string train =
      " " + train_args("chains.json", dir.file("run"), "--steps 2 --batch-size 4");
  const std::string bench = " bench train --config " + quote(dir.file("chains.json")) +
                            " --batch-size 4 --seq-len 16 --steps 1 --threads 1";
  struct Case {
    std::string args, bad, named;
  };
  // Rank 1's command line: rank 0's with the bad value in place of its own.
  auto with = [](std::string args, const std::string& from, const std::string& to) {
    const size_t at = args.find(from);
    return at == std::string::npos ? args + " " + to : args.replace(at, from.size(), to);
  };
  for (const Case& c : {Case{train, "--threads -5", "--threads -5"},
                        Case{train, "--memory-limit banana", "--memory-limit"},
                        Case{bench, "--threads -3", "--threads -3"}}) {
    SCOPED_TRACE(c.bad);
    const std::string rank1 = c.bad.rfind("--threads", 0) == 0 ? with(c.args, "--threads 1", c.bad)
                                                               : c.args + " " + c.bad;
    const std::string cmd = testing::mpirun_command(2, 40) + " -np 1 '" + CHAINLM_BINARY + "'" +
                            c.args + " : -np 1 '" + CHAINLM_BINARY + "'" + rank1 +
                            " >/dev/null 2>" + quote(dir.file("err.txt"));
    const int status = std::system(cmd.c_str());
    const std::string err = read_bytes(dir.file("err.txt"));
    ASSERT_TRUE(WIFEXITED(status)) << err;
    EXPECT_EQ(WEXITSTATUS(status), 1) << "124: timeout killed a hung job\n" << err;
    EXPECT_NE(err.find("rank 1 of 2"), std::string::npos) << err;
    EXPECT_NE(err.find(c.named), std::string::npos) << err;
    EXPECT_EQ(err.find("MPI_ABORT"), std::string::npos) << err;
  }
  EXPECT_FALSE(fs::exists(dir.file("run/latest")));
}

// bench train under mpirun: the global batch over the ranks, and the communication figures.
TEST_F(DistributedTrain, BenchTrainReportsCommunication) {
  RunResult r = run_chainlm_mpi(dir, 2, "bench train --config " + quote(dir.file("chains.json")) +
                                            " --batch-size 4 --seq-len 16 --steps 2 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);  // one line, from rank 0
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["batch_size"], 4);
  EXPECT_EQ(j["rows_per_rank"], 2);
  EXPECT_GT(j["comm_ms"].get<double>(), 0.0);
  EXPECT_GT(j["grad_bytes"].get<double>(), 0.0);
  EXPECT_EQ(j["ring_bytes_per_rank"].get<double>(), j["grad_bytes"].get<double>());  // 2(N-1)/N = 1
  EXPECT_GE(j["comm_fraction"].get<double>(), 0.0);
  EXPECT_LT(j["comm_fraction"].get<double>(), 1.0);
}

}  // namespace
}  // namespace chainlm
