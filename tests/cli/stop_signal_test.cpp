// Ctrl-C (SIGINT) and SIGTERM during `chainlm train` (core/stop_signals.h): the run finishes its
// step, saves it as a checkpoint by the crash-safe protocol, says where and how to go on and
// exits with 128 + the signal; a second signal quits at once. Before, the default action
// killed the run silently and lost up to a whole save interval.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "../train/train_test_util.h"
#include "core/stop_signals.h"
#include "run_cli.h"
#include "spawn_process.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::trimmed;
using testing::read_bytes;
using testing::write_bytes;

// The number of training steps metrics.jsonl has logged so far.
int logged_steps(const std::string& run) {
  const std::string m = read_bytes(run + "/metrics.jsonl");
  int n = 0;
  for (size_t at = m.find("\"loss\""); at != std::string::npos; at = m.find("\"loss\"", at + 1)) ++n;
  return n;
}

class StopSignal : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(300, "a long run is stopped politely ");
    config = dir.file("config.json");
    // Steps of some tens of milliseconds: a signal lands inside one.
    write_bytes(config, R"({"dim": 128, "n_layers": 2, "n_heads": 4, "ffn_dim": 256, "vocab_size": 258,
                            "chains": [1, 1], "max_seq_len": 32})");
  }
  // Starts a long run (with `env`) and waits until it has logged 3 steps.
  pid_t start(const std::string& run, const testing::Env& env = {}) {
    const pid_t pid = testing::spawn({CHAINLM_BINARY, "train", "--config", config, "--data", data, "--out", run,
                                      "--steps", "100000", "--batch-size", "8", "--seq-len", "32",
                                      "--eval-every", "100000", "--threads", "1"},
                                     env, out, err);
    for (int i = 0; i < 600 && logged_steps(run) < 3; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return pid;
  }
  std::string config, out = dir.file("out.txt"), err = dir.file("err.txt");
};

TEST_F(StopSignal, FirstSignalSavesTheCurrentStepAndSaysHowToResume) {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {  // SIGHUP: the terminal closed
    const std::string run = dir.file(signal_name(sig));
    const pid_t pid = start(run);
    ::kill(pid, sig);
    const testing::Outcome r = testing::finish(pid, out, err);
    ASSERT_EQ(r.signal, 0) << "killed by the signal: " << r.err;
    EXPECT_EQ(r.code, 128 + sig) << r.err;
    const std::string name = signal_name(sig);
    EXPECT_TRUE(contains(r.err, "training stopped by " + name + " at step ")) << r.err;
    // With the run's thread count: resumed on every core it would not go on bit for bit.
    EXPECT_TRUE(contains(r.err, "--resume --threads 1\n")) << r.err;
    // The checkpoint is the last step trained: nothing of the run is lost.
    const long steps = logged_steps(run);
    char step_dir[32];
    std::snprintf(step_dir, sizeof step_dir, "step-%08ld", steps);
    EXPECT_EQ(trimmed(read_bytes(run + "/latest")), step_dir) << r.err;
    EXPECT_TRUE(fs::exists(run + "/" + step_dir + "/model.safetensors"));
    auto resumed = testing::run_chainlm(dir, "train --out " + testing::quote(run) + " --resume --steps " +
                                                 std::to_string(steps + 2) + " --quiet");
    EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  }
}

// Ctrl-C during the run's last step: the run ends whole and saved, but it exited 0 as if no stop
// had come, and a script running it (bench/replicate) went on to its next command (a user
// trial). It exits with 128 + the signal, as a run stopped earlier does.
TEST_F(StopSignal, ASignalDuringTheLastStepStillEndsWithItsStatus) {
  const std::string run = dir.file("last");
  const pid_t pid = testing::spawn(
      {CHAINLM_BINARY, "train", "--config", config, "--data", data, "--out", run, "--steps", "3",
       "--batch-size", "8", "--seq-len", "32", "--eval-every", "100000", "--threads", "1"},
      {{"CHAINLM_PAUSE_AT", "train.mid_step:3"}}, out, err);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << read_bytes(err);  // inside step 3 of 3
  ::kill(pid, SIGINT);
  ::kill(pid, SIGCONT);
  const testing::Outcome r = testing::finish(pid, out, err);
  ASSERT_EQ(r.signal, 0) << r.err;
  EXPECT_EQ(r.code, 128 + SIGINT) << r.err;
  EXPECT_TRUE(
      contains(r.err, "SIGINT came during the last step: training finished at step 3; saved "))
      << r.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000003") << r.err;
}

// A training whose output went to a pipe that closed (`train ... 2>&1 | head -3`, a `tee` that
// died) was killed by SIGPIPE at its next progress line, its steps since the last checkpoint
// lost: it stops as for SIGTERM. The test's reader stops reading after 3 steps; the run's next
// progress line (within 5 s) finds the pipe broken.
TEST_F(StopSignal, ABrokenOutputPipeSavesTheStep) {
  const std::string run = dir.file("pipe"), fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const pid_t pid = testing::spawn({CHAINLM_BINARY, "train", "--config", config, "--data", data,
                                    "--out", run, "--steps", "100000", "--batch-size", "8",
                                    "--seq-len", "32", "--eval-every", "100000", "--threads", "1"},
                                   {}, fifo, fifo);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  std::string seen;
  char buf[4096];
  for (int i = 0; i < 600 && logged_steps(run) < 3; ++i) {
    for (ssize_t n; (n = ::read(reader, buf, sizeof buf)) > 0;) seen.append(buf, n);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::close(reader);
  const testing::Outcome r = testing::finish(pid, out, err);
  ASSERT_EQ(r.signal, 0) << "killed by SIGPIPE: " << seen;
  EXPECT_EQ(r.code, 128 + SIGPIPE) << seen;
  const long steps = logged_steps(run);
  char step_dir[32];
  std::snprintf(step_dir, sizeof step_dir, "step-%08ld", steps);
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), step_dir) << seen;
  EXPECT_TRUE(contains(read_bytes(run + "/metrics.jsonl"), "\"signal\":\"SIGPIPE\""));
  auto resumed =
      testing::run_chainlm(dir, "train --out " + testing::quote(run) + " --resume --steps " +
                                    std::to_string(steps + 1) + " --quiet");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
}

// The second Ctrl-C lands while the first one's checkpoint is being written (the run stops
// itself there: CHAINLM_PAUSE_AT), and ends the process at once; the unfinished checkpoint is
// a temporary directory, as after any crash, and `latest` names none.
TEST_F(StopSignal, SecondSignalQuitsAtOnce) {
  const std::string run = dir.file("twice");
  const pid_t pid = start(run, {{"CHAINLM_PAUSE_AT", "checkpoint.after_weights:1"}});
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << "the run did not reach its checkpoint write";
  // A second signal within a second of the first is the same stop (see the next test).
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ::kill(pid, SIGINT);
  ::kill(pid, SIGCONT);
  const testing::Outcome r = testing::finish(pid, out, err);
  EXPECT_EQ(r.code, 128 + SIGINT) << r.err;
  EXPECT_TRUE(contains(r.err, "quitting at once")) << r.err;
  EXPECT_FALSE(fs::exists(run + "/latest"));
}

// `timeout 2 chainlm train ...` sends its SIGTERM to the process and to its process group, so
// the run receives it twice within moments: read as a second signal, it quit without its
// checkpoint (one run in five). The duplicate now lands while the first one's checkpoint is
// being written, as the second signal of the test above, and the checkpoint is still saved.
TEST_F(StopSignal, TheSameStopDeliveredTwiceSavesTheStep) {
  const std::string run = dir.file("timeout");
  const pid_t pid = start(run, {{"CHAINLM_PAUSE_AT", "checkpoint.after_weights:1"}});
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << "the run did not reach its checkpoint write";
  ::kill(pid, SIGTERM);
  ::kill(pid, SIGCONT);
  const testing::Outcome r = testing::finish(pid, out, err);
  EXPECT_EQ(r.code, 128 + SIGTERM) << r.err;
  EXPECT_FALSE(contains(r.err, "quitting at once")) << r.err;
  EXPECT_TRUE(contains(r.err, "the same stop")) << r.err;
  const long steps = logged_steps(run);
  char step_dir[32];
  std::snprintf(step_dir, sizeof step_dir, "step-%08ld", steps);
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), step_dir) << r.err;
}

// Ctrl-C in a command that writes one output (quantize here; expand and export alike) ended it
// without a word, leaving a temporary as large as the model. It now says what becomes of it and
// still dies of the signal; the output is not there, and the next run with that --out is clean.
TEST_F(StopSignal, AnInterruptedOutputSaysWhatBecomesOfIt) {
  const std::string run = dir.file("run");
  auto r = testing::run_chainlm(dir, "train --config " + testing::quote(config) + " --data " +
                                         testing::quote(data) + " --out " + testing::quote(run) +
                                         " --steps 1 --batch-size 2 --seq-len 16 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string q = dir.file("q");
  const pid_t pid =
      testing::spawn({CHAINLM_BINARY, "quantize", "--model", run, "--type", "q8_0", "--out", q},
                     {{"CHAINLM_PAUSE_AT", "atomic_file.before_rename:1"}}, out, err);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << read_bytes(err);  // mid-write: the weights are in a temporary
  ::kill(pid, SIGINT);
  ::kill(pid, SIGCONT);
  const testing::Outcome o = testing::finish(pid, out, err);
  EXPECT_EQ(o.signal, SIGINT);
  EXPECT_TRUE(contains(
      o.err, "interrupted before its output was complete; nothing under --out was replaced"))
      << o.err;
  EXPECT_FALSE(fs::exists(q));
  r = testing::run_chainlm(
      dir, "quantize --model " + testing::quote(run) + " --type q8_0 --out " + testing::quote(q));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
}

}  // namespace
}  // namespace chainlm
