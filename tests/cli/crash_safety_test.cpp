// Crash safety and numerical faults of `chainlm train`, through the real binary
// (docs/reliability.md): SIGKILL at every stage of a checkpoint write and at random moments,
// a really full disk (a small tmpfs in a private mount namespace), read-only and unwritable
// run directories, before training and mid-run, and NaN gradients and divergence in both
// --on-nonfinite modes, also under mpirun. Every interrupted run must leave its last complete
// checkpoint loadable and resume to final weights, optimizer moments and per-step losses
// bit-identical to an uninterrupted run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "../train/train_test_util.h"
#include "io/safetensors.h"
#include "run_mpi.h"
#include "spawn_process.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

const char* kConfig =
    R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 258,
        "chains": [1, 1], "kv_share": true, "max_seq_len": 32})";

using testing::Args;
using testing::Env;
using testing::finish;
using testing::Outcome;
using testing::spawn;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// What a killed writer may leave behind; a finished run must have none of it.
std::vector<std::string> leftovers(const fs::path& run) {
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

std::string joined(const std::vector<std::string>& v) {
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

RunState read_state(const fs::path& run) {
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
void expect_identical(const RunState& got, const RunState& want, const std::string& what) {
  EXPECT_EQ(got.latest, want.latest) << what;
  EXPECT_TRUE(got.weights == want.weights) << what << ": final weights differ";
  EXPECT_TRUE(got.moments == want.moments) << what << ": final optimizer moments differ";
  EXPECT_EQ(got.loss, want.loss) << what << ": per-step losses differ";
  EXPECT_EQ(got.val, want.val) << what << ": validation losses differ";
  EXPECT_EQ(got.skipped, want.skipped) << what << ": skipped steps differ";
}

// Every float of every tensor of a safetensors file is finite.
void expect_all_finite(const std::string& file) {
  SafetensorsReader reader(file);
  for (const auto& e : reader.entries()) {
    const Tensor t = reader.read_f32(e.name);
    for (long i = 0; i < (long)t.numel(); ++i)
      ASSERT_TRUE(std::isfinite(t.data[i])) << file << ": " << e.name << "[" << i << "]";
  }
}

// Every checkpoint directory of a run holds only finite weights and moments.
int expect_checkpoints_finite(const fs::path& run) {
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

std::string step_name(long step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08ld", step);
  return name;
}

// Runs a shell script in a private mount namespace, where it may mount a tmpfs of its own
// (as root `unshare -m`; otherwise a user namespace too, `unshare -rm`). Returns the exit
// code, or -1 when this machine allows no such namespace.
std::string namespace_command() { return ::geteuid() == 0 ? "unshare -m" : "unshare -rm"; }

bool can_mount_tmpfs(const TempDir& dir) {
  const std::string mnt = dir.file("probe_mnt");
  fs::create_directories(mnt);
  const std::string cmd = namespace_command() + " sh -c 'mount -t tmpfs -o size=64k tmpfs " + mnt +
                          " && umount " + mnt + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

int run_in_mount_namespace(const TempDir& dir, const std::string& script) {
  const std::string path = dir.file("script.sh");
  write_bytes(path, script);
  const std::string cmd = "timeout -k 10 300 " + namespace_command() + " sh " + path;
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Files' sizes rounded up to whole pages: what a directory takes on a tmpfs.
uintmax_t tmpfs_bytes(const fs::path& dir) {
  uintmax_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) total += (e.file_size() + 4095) / 4096 * 4096;
  return total;
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
    Args a = {CHAINLM_BINARY, "train", "--config", config, "--data", data, "--out", run,
              "--steps", std::to_string(steps), "--batch-size", "2", "--seq-len", "16",
              "--save-every", "1", "--eval-every", "3", "--threads", "1", "--quiet"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  Args resume_args(const std::string& run, long steps, const Args& extra = {}) const {
    Args a = {CHAINLM_BINARY, "train", "--out", run, "--resume", "--steps", std::to_string(steps),
              "--threads", "1", "--quiet"};
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
    reference_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(r.code, 0) << r.err;
    return read_state(ref);
  }
  // `chainlm info` loads the checkpoint `latest` names.
  void expect_loadable(const std::string& run, const std::string& what) const {
    const Outcome r = run_info(run);
    EXPECT_EQ(r.code, 0) << what << ": the latest checkpoint does not load: " << r.err;
  }
  Outcome run_info(const std::string& path) const { return run({CHAINLM_BINARY, "info", "--model", path}); }

  std::string config;
  double reference_seconds = 0;
};

// ---------------------------------------------------------------------------------------------
// SIGKILL at named points (CHAINLM_CRASH_AT).

TEST_F(CrashSafety, KilledAtEveryCheckpointStageResumesBitIdentical) {
  const long steps = 5;
  const RunState ref = reference(steps);
  // Atomic writes of a run, in order (atomic_file.* points count them): metrics.jsonl at
  // step 0 (1), then per checkpoint config.json, model.safetensors, optimizer.safetensors,
  // trainer_state.json, chainlm_tokenizer.json and `latest` (2-7 for step 1, 8-13, 14-19 for step 3).
  struct Case {
    std::string point, latest;  // latest: what `latest` names after the kill ("" = nothing)
    bool leaves_temp;           // a partial temporary directory or file must be left behind
  };
  const std::vector<Case> cases = {
      {"checkpoint.after_weights:3", step_name(2), true},
      {"checkpoint.after_optimizer:3", step_name(2), true},
      {"checkpoint.before_rename:3", step_name(2), true},
      {"checkpoint.before_latest:3", step_name(2), false},  // step-3 complete, never named
      {"checkpoint.after_latest:3", step_name(3), false},
      {"checkpoint.after_prune:3", step_name(3), false},
      {"train.mid_step:3", step_name(2), false},
      {"atomic_file.after_data:16", step_name(2), true},     // inside optimizer.safetensors
      {"atomic_file.before_rename:15", step_name(2), true},  // model.safetensors complete
      {"atomic_file.before_rename:19", step_name(2), true},  // the new `latest`, not renamed
      {"atomic_file.after_data:3", "", true},                // before the first checkpoint
      {"train.mid_step:1", "", false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.point);
    const std::string runp = dir.file("run");
    fs::remove_all(runp);
    Outcome r = run(train_args(runp, steps), {{"CHAINLM_CRASH_AT", c.point}});
    ASSERT_EQ(r.signal, SIGKILL) << "exit " << r.code << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "fault injection: SIGKILL at")) << r.err;
    const fs::path latest = fs::path(runp) / "latest";
    EXPECT_EQ(fs::exists(latest) ? trim(read_bytes(latest.string())) : "", c.latest);
    if (c.leaves_temp) {
      EXPECT_FALSE(leftovers(runp).empty()) << "expected a partial write";
    }
    if (!c.latest.empty()) {
      expect_loadable(runp, c.point);
    } else {
      // No checkpoint yet: --resume says so; the run starts again.
      r = run(resume_args(runp, steps));
      EXPECT_EQ(r.code, 1);
      EXPECT_TRUE(contains(r.err, "no complete checkpoint")) << r.err;
    }
    r = run(continue_args(runp, steps));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
    expect_identical(read_state(runp), ref, c.point);
  }
}

TEST_F(CrashSafety, RandomKillsAlwaysLeaveALoadableCheckpointAndResumeBitIdentical) {
  const long steps = 12;
  const RunState ref = reference(steps);
  // Kills within the first half of a whole run's time: most attempts die, in a step, a
  // validation or (most of the time is spent there) a checkpoint write.
  const double window = reference_seconds / 2;
  std::mt19937 rng(20261122);
  std::uniform_real_distribution<double> delay(0.0, window);
  const int runs = 10, max_kills_per_run = 10;
  int kills = 0, mid_write = 0, no_checkpoint_yet = 0;
  for (int i = 0; i < runs; ++i) {
    const std::string runp = dir.file("random" + std::to_string(i));
    for (int attempt = 0;; ++attempt) {
      const std::string out = dir.file("out.txt"), err = dir.file("err.txt");
      const pid_t pid = spawn(continue_args(runp, steps), {}, out, err);
      if (attempt < max_kills_per_run) {
        std::this_thread::sleep_for(std::chrono::duration<double>(delay(rng)));
        ::kill(pid, SIGKILL);
      }
      const Outcome r = finish(pid, out, err);
      if (r.signal == 0) {
        ASSERT_EQ(r.code, 0) << "run " << i << " attempt " << attempt << ": " << r.err;
        break;
      }
      ASSERT_EQ(r.signal, SIGKILL);
      ++kills;
      if (!leftovers(runp).empty()) ++mid_write;
      if (fs::exists(fs::path(runp) / "latest"))
        expect_loadable(runp, "run " + std::to_string(i) + " after kill " + std::to_string(attempt));
      else
        ++no_checkpoint_yet;
    }
    EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
    expect_identical(read_state(runp), ref, "run " + std::to_string(i));
  }
  std::printf("%d random kills over %d runs (window %.0f ms): %d left a partial write behind, "
              "%d came before the first checkpoint; every run resumed bit-identical\n",
              kills, runs, window * 1e3, mid_write, no_checkpoint_yet);
  RecordProperty("kills", kills);
  RecordProperty("kills_mid_write", mid_write);
  EXPECT_GE(kills, runs / 2);
}

// ---------------------------------------------------------------------------------------------
// A full disk.

// The second checkpoint does not fit: clear error, nothing partial left, the first one kept
// and resumable.
void check_full_disk_outcome(const Outcome& r, const std::string& run_path, const fs::path& snapshot,
                             const std::string& listing) {
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "No space left on device")) << r.err;
  EXPECT_TRUE(contains(r.err, "checkpoint at step 2 not written")) << r.err;
  EXPECT_TRUE(contains(r.err, run_path + "/.tmp-step-00000002")) << r.err;
  EXPECT_TRUE(contains(r.err, "'latest' still names the previous one, step-00000001")) << r.err;
  EXPECT_FALSE(contains(listing, ".tmp-")) << listing;
  EXPECT_FALSE(contains(listing, "step-00000002")) << listing;
  EXPECT_EQ(read_bytes((snapshot / "latest").string()), "step-00000001\n");
}

TEST_F(CrashSafety, FullDiskKeepsThePreviousCheckpoint) {
  const long steps = 4;
  const RunState ref = reference(steps);
  // Room for one checkpoint and a half: the first fits, the second's moments do not.
  const uintmax_t checkpoint = tmpfs_bytes(fs::path(dir.file("reference")) / step_name(steps));
  const uintmax_t size = checkpoint * 3 / 2 + 16 * 4096;
  const std::string mnt = dir.file("mnt"), out = dir.file("out");
  fs::create_directories(mnt);
  fs::create_directories(out);
  const fs::path snapshot = fs::path(out) / "snapshot";
  const std::string run_path = mnt + "/run";
  Outcome r;
  std::string listing;
  if (can_mount_tmpfs(dir)) {
    std::string train;
    for (const std::string& a : train_args(run_path, steps)) train += "'" + a + "' ";
    const std::string script =
        "mount -t tmpfs -o size=" + std::to_string(size) + " tmpfs " + mnt + " || exit 90\n" +
        train + ">" + out + "/stdout 2>" + out + "/stderr; echo $? >" + out + "/rc\n" +
        "ls -a " + run_path + " >" + out + "/listing\n" +
        "cp -a " + run_path + " " + snapshot.string() + "\n" + "umount " + mnt + "\n";
    ASSERT_EQ(run_in_mount_namespace(dir, script), 0);
    r.code = std::stoi(read_bytes(out + "/rc"));
    r.err = read_bytes(out + "/stderr");
    listing = read_bytes(out + "/listing");
  } else {
    // No mount namespace on this machine: the same failure, injected into the 10th atomic
    // write (the second checkpoint's optimizer.safetensors) as ENOSPC.
    std::printf("no private mount namespace here: full disk simulated (CHAINLM_WRITE_ERROR_AT)\n");
    r = run(train_args(run_path, steps),
            {{"CHAINLM_WRITE_ERROR_AT", "atomic_file.write:11=ENOSPC"}});
    for (const auto& e : fs::directory_iterator(run_path)) listing += e.path().filename().string() + "\n";
    fs::copy(run_path, snapshot, fs::copy_options::recursive);
  }
  check_full_disk_outcome(r, run_path, snapshot, listing);
  expect_loadable(snapshot.string(), "the snapshot of the full disk");
  // The kept checkpoint resumes, on a disk with room, to the uninterrupted result.
  const Outcome resumed = run(resume_args(snapshot.string(), steps));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  expect_identical(read_state(snapshot), ref, "resumed after a full disk");
}

// Without a small filesystem: write errors injected at chosen writes, with several errnos.
TEST_F(CrashSafety, InjectedWriteErrorsKeepThePreviousCheckpoint) {
  const long steps = 4;
  const RunState ref = reference(steps);
  {
    const std::string runp = dir.file("enospc");
    const Outcome r =
        run(train_args(runp, steps), {{"CHAINLM_WRITE_ERROR_AT", "atomic_file.write:11=ENOSPC"}});
    std::string listing;
    for (const auto& e : fs::directory_iterator(runp)) listing += e.path().filename().string() + "\n";
    check_full_disk_outcome(r, runp, runp, listing);
    expect_loadable(runp, "ENOSPC");
  }
  {
    // EDQUOT in the second checkpoint's weights.
    const std::string runp = dir.file("edquot");
    const Outcome r =
        run(train_args(runp, steps), {{"CHAINLM_WRITE_ERROR_AT", "atomic_file.write:10=EDQUOT"}});
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(contains(r.err, "Disk quota exceeded")) << r.err;
    EXPECT_TRUE(contains(r.err, "model.safetensors")) << r.err;
    EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000001\n");
    EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
  }
  {
    // EIO while switching `latest` to the complete second checkpoint: it stays unnamed, and a
    // resume from the first one replaces it with the same.
    const std::string runp = dir.file("eio");
    Outcome r =
        run(train_args(runp, steps), {{"CHAINLM_WRITE_ERROR_AT", "atomic_file.write:14=EIO"}});
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(contains(r.err, "could not be made the latest")) << r.err;
    EXPECT_TRUE(contains(r.err, "Input/output error")) << r.err;
    EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000001\n");
    EXPECT_TRUE(fs::exists(runp + "/step-00000002/model.safetensors"));
    EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
    r = run(resume_args(runp, steps));
    ASSERT_EQ(r.code, 0) << r.err;
    expect_identical(read_state(runp), ref, "resumed after EIO on latest");
  }
  {
    // The log's disk fills up between checkpoints: the message names the step and the
    // checkpoint a resume goes on from (it said only "cannot append"), and the resume matches.
    const std::string runp = dir.file("log_full");
    Outcome r =
        run(train_args(runp, steps), {{"CHAINLM_WRITE_ERROR_AT", "metrics.append:5=ENOSPC"}});
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(contains(r.err, "metrics.jsonl (the line of step") &&
                contains(r.err, "No space left on device") &&
                contains(r.err, "chainlm train --resume goes on from it"))
        << r.err;
    // The failed line is cut back off the log: no partial record for plot and report (a real
    // full disk left half a line). The four lines before it are whole.
    const std::string log = read_bytes(runp + "/metrics.jsonl");
    ASSERT_FALSE(log.empty());
    EXPECT_EQ(log.back(), '\n');
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 4) << log;
    r = run(resume_args(runp, steps));
    ASSERT_EQ(r.code, 0) << r.err;
    expect_identical(read_state(runp), ref, "resumed after the log's disk filled");
  }
}

// ---------------------------------------------------------------------------------------------
// Read-only and unwritable run directories.

TEST_F(CrashSafety, ReadOnlyFilesystemAtStartAndMidCheckpoint) {
  if (!can_mount_tmpfs(dir)) {
    // Remounting read-only needs a mount namespace; without one, the unwritable-directory
    // test below covers the same paths with EACCES.
    GTEST_SKIP() << "no private mount namespace on this machine";
  }
  const long steps = 4;
  const RunState ref = reference(steps);
  const std::string mnt = dir.file("mnt"), out = dir.file("out");
  fs::create_directories(mnt);
  fs::create_directories(out);
  auto command = [&](const Args& args, const std::string& tag) {
    std::string s;
    for (const std::string& a : args) s += "'" + a + "' ";
    return s + ">" + out + "/" + tag + ".out 2>" + out + "/" + tag + ".err";
  };
  const std::string run_path = mnt + "/run", fresh_path = mnt + "/fresh";
  // 1. A run killed after its step-2 checkpoint; the filesystem turns read-only; a new run
  //    and a resume both fail before training. 2. Read-write again, a resume pauses inside its checkpoint at step
  //    3 (model.safetensors written), the filesystem turns read-only, the checkpoint fails.
  //    3. Read-write again, the resume completes.
  const std::string wait_stopped =
      "i=0; while :; do st=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null); "
      "[ \"$st\" = T ] && break; [ -z \"$st\" -o \"$st\" = Z ] && break; i=$((i+1)); "
      "[ $i -gt 1200 ] && break; sleep 0.05; done; echo \"$st\" >" + out + "/paused_state\n";
  const std::string script =
      "mount -t tmpfs -o size=64m tmpfs " + mnt + " || exit 90\n" +
      "CHAINLM_CRASH_AT=checkpoint.after_prune:2 " + command(train_args(run_path, steps), "first") +
      "; echo $? >" + out + "/first.rc\n" +
      "mount -o remount,ro " + mnt + " || exit 91\n" +
      command(train_args(fresh_path, steps), "fresh") + "; echo $? >" + out + "/fresh.rc\n" +
      command(resume_args(run_path, steps), "ro_resume") + "; echo $? >" + out + "/ro_resume.rc\n" +
      "mount -o remount,rw " + mnt + " || exit 92\n" +
      "CHAINLM_PAUSE_AT=checkpoint.after_weights:1 " + command(resume_args(run_path, steps), "mid") +
      " &\npid=$!\n" + wait_stopped +
      "mount -o remount,ro " + mnt + "; echo $? >" + out + "/remount.rc\n" +
      "kill -CONT $pid; wait $pid; echo $? >" + out + "/mid.rc\n" +
      "ls -a " + run_path + " >" + out + "/mid.listing\n" +
      "cat " + run_path + "/latest >" + out + "/mid.latest\n" +
      "mount -o remount,rw " + mnt + " || exit 93\n" +
      command(resume_args(run_path, steps), "final") + "; echo $? >" + out + "/final.rc\n" +
      "cp -a " + run_path + " " + out + "/snapshot\n" + "umount " + mnt + "\n";
  ASSERT_EQ(run_in_mount_namespace(dir, script), 0);
  auto rc = [&](const std::string& tag) { return std::stoi(read_bytes(out + "/" + tag + ".rc")); };
  auto err = [&](const std::string& tag) { return read_bytes(out + "/" + tag + ".err"); };
  ASSERT_EQ(rc("first"), 128 + SIGKILL) << err("first");  // killed after its step-2 checkpoint

  EXPECT_EQ(rc("fresh"), 1);
  EXPECT_TRUE(contains(err("fresh"), "cannot create the run directory " + fresh_path)) << err("fresh");
  EXPECT_TRUE(contains(err("fresh"), "Read-only file system")) << err("fresh");
  EXPECT_EQ(rc("ro_resume"), 1);
  EXPECT_TRUE(contains(err("ro_resume"), run_path)) << err("ro_resume");
  EXPECT_TRUE(contains(err("ro_resume"), "Read-only file system")) << err("ro_resume");

  EXPECT_EQ(read_bytes(out + "/paused_state"), "T\n");
  EXPECT_EQ(rc("remount"), 0);
  EXPECT_EQ(rc("mid"), 1) << err("mid");
  EXPECT_TRUE(contains(err("mid"), "checkpoint at step 3 not written")) << err("mid");
  EXPECT_TRUE(contains(err("mid"), "Read-only file system")) << err("mid");
  EXPECT_TRUE(contains(err("mid"), "'latest' still names the previous one, step-00000002")) << err("mid");
  // A read-only filesystem cannot even lose the partial directory: the message says so and
  // the next run removes it.
  EXPECT_TRUE(contains(err("mid"), "could not be removed")) << err("mid");
  EXPECT_TRUE(contains(read_bytes(out + "/mid.listing"), ".tmp-step-00000003")) << read_bytes(out + "/mid.listing");
  EXPECT_EQ(read_bytes(out + "/mid.latest"), "step-00000002\n");

  EXPECT_EQ(rc("final"), 0) << err("final");
  const fs::path snapshot = fs::path(out) / "snapshot";
  EXPECT_TRUE(leftovers(snapshot).empty()) << joined(leftovers(snapshot));
  expect_identical(read_state(snapshot), ref, "resumed after a read-only filesystem");
}

// A new run on a full disk fails its write check and takes the directory it made away again
// (it left one holding .lock, the mark of a run that started: a trial on a full tmpfs).
TEST_F(CrashSafety, ANewRunOnAFullDiskLeavesNoDirectory) {
  if (!can_mount_tmpfs(dir)) GTEST_SKIP() << "no private mount namespace on this machine";
  const std::string mnt = dir.file("full"), out = dir.file("full_out");
  fs::create_directories(mnt);
  fs::create_directories(out);
  // Into a new directory; into new parents too (they go as well); into an existing empty one
  // (it stays, without the .lock the run made there).
  auto train = [&](const std::string& run, const std::string& tag) {
    std::string line;
    for (const std::string& a : train_args(run, 2)) line += "'" + a + "' ";
    return line + ">/dev/null 2>" + out + "/" + tag + ".err; echo $? >" + out + "/" + tag + ".rc\n";
  };
  const std::string script =
      "mount -t tmpfs -o size=256k tmpfs " + mnt + " || exit 90\n" + "mkdir " + mnt + "/pre\n" +
      "dd if=/dev/zero of=" + mnt + "/fill bs=4k >/dev/null 2>&1\n" + train(mnt + "/run", "new") +
      train(mnt + "/a/b/run", "parents") + train(mnt + "/pre", "existing") + "ls -a " + mnt + " " +
      mnt + "/pre >" + out + "/listing\n" + "umount " + mnt + "\n";
  ASSERT_EQ(run_in_mount_namespace(dir, script), 0);
  for (const auto& [tag, run] : {std::pair<std::string, std::string>{"new", mnt + "/run"},
                                 {"parents", mnt + "/a/b/run"},
                                 {"existing", mnt + "/pre"}}) {
    const std::string err = read_bytes(out + "/" + tag + ".err");
    EXPECT_EQ(read_bytes(out + "/" + tag + ".rc"), "1\n") << tag << ": " << err;
    EXPECT_TRUE(contains(err, "cannot write to the run directory " + run) &&
                contains(err, "No space left on device"))
        << tag << ": " << err;
  }
  EXPECT_EQ(read_bytes(out + "/listing"), mnt + ":\n.\n..\nfill\npre\n\n" + mnt + "/pre:\n.\n..\n");
}

TEST_F(CrashSafety, UnwritableRunDirectoryAtStartAndMidRun) {
  const long steps = 4;
  const RunState ref = reference(steps);
  // Root writes anywhere: the runs go as user nobody (setpriv), other users as themselves.
  Args as_user;
  if (::geteuid() == 0) as_user = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  auto user = [&](Args args) {
    args.insert(args.begin(), as_user.begin(), as_user.end());
    return args;
  };
  const fs::path base = dir.file("w");
  fs::create_directories(base);
  fs::permissions(base, fs::perms::all);  // 0777: nobody creates its run here
  // Nobody must read the config and the data whatever the umask.
  const fs::perms readable = fs::perms::others_read | fs::perms::group_read;
  const fs::perms enterable = readable | fs::perms::others_exec | fs::perms::group_exec;
  fs::permissions(dir.path(), enterable, fs::perm_options::add);
  fs::permissions(config, readable, fs::perm_options::add);
  fs::permissions(data, enterable, fs::perm_options::add);
  for (const auto& e : fs::directory_iterator(data)) fs::permissions(e.path(), readable, fs::perm_options::add);

  // At start: a run directory that cannot be created, and one that exists but is read-only.
  const fs::path locked = base / "locked";
  fs::create_directories(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  Outcome r = run(user(train_args((locked / "run").string(), steps)));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "cannot create the run directory " + (locked / "run").string())) << r.err;
  EXPECT_TRUE(contains(r.err, "Permission denied")) << r.err;
  EXPECT_FALSE(fs::exists(locked / "run"));

  const fs::path readonly = base / "readonly";
  fs::create_directories(readonly);
  fs::permissions(readonly, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::others_read |
                                fs::perms::others_exec);
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(readonly.c_str(), 65534, 65534), 0);
  }
  r = run(user(train_args(readonly.string(), steps)));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "cannot write to the run directory " + readonly.string())) << r.err;
  EXPECT_TRUE(contains(r.err, "Permission denied")) << r.err;
  EXPECT_TRUE(contains(r.err, "nothing was trained")) << r.err;
  EXPECT_TRUE(fs::is_empty(readonly));

  // Mid-run: paused after its first checkpoint, the directory turns read-only (0555); the
  // second checkpoint fails cleanly; writable again, the run resumes to the same result.
  const fs::path runp = base / "run";
  const std::string out = dir.file("out.txt"), err = dir.file("err.txt");
  const pid_t pid = spawn(user(train_args(runp.string(), steps)),
                          {{"CHAINLM_PAUSE_AT", "checkpoint.after_prune:1"}}, out, err);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << read_bytes(err);
  fs::permissions(runp, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                  fs::perm_options::remove);
  ::kill(pid, SIGCONT);
  r = finish(pid, out, err);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "checkpoint at step 2 not written")) << r.err;
  EXPECT_TRUE(contains(r.err, runp.string() + "/.tmp-step-00000002")) << r.err;
  EXPECT_TRUE(contains(r.err, "Permission denied")) << r.err;
  EXPECT_TRUE(contains(r.err, "'latest' still names the previous one, step-00000001")) << r.err;
  EXPECT_EQ(read_bytes((runp / "latest").string()), "step-00000001\n");
  EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
  expect_loadable(runp.string(), "after EACCES mid-run");

  fs::permissions(runp, fs::perms::owner_write, fs::perm_options::add);
  r = run(user(resume_args(runp.string(), steps)));
  ASSERT_EQ(r.code, 0) << r.err;
  expect_identical(read_state(runp), ref, "resumed after EACCES");
}

// The token shards are memory-mapped: train.bin truncated in place while a run trains ends it
// with SIGBUS, which used to say nothing. It is said (and the signal kept), and the last
// checkpoint stays the run's, loadable.
TEST_F(CrashSafety, AShardTruncatedWhileTrainingIsNamed) {
  const std::string runp = dir.file("run");
  const std::string out = dir.file("out.txt"), err = dir.file("err.txt");
  const pid_t pid =
      spawn(train_args(runp, 6), {{"CHAINLM_PAUSE_AT", "checkpoint.after_prune:1"}}, out, err);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << read_bytes(err);
  fs::resize_file(fs::path(data) / "train.bin", 0);
  ::kill(pid, SIGCONT);
  const Outcome r = finish(pid, out, err);
  EXPECT_EQ(r.signal, SIGBUS) << r.code << " " << r.err;
  EXPECT_TRUE(contains(r.err, "was truncated or replaced while in use (SIGBUS)")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000001\n");
  expect_loadable(runp, "after SIGBUS");
}

// ---------------------------------------------------------------------------------------------
// Non-finite losses and gradients.

TEST_F(CrashSafety, NanGradientStopsBeforeAnyWeightChanges) {
  const std::string runp = dir.file("run");
  const Outcome r = run(train_args(runp, 6), {{"CHAINLM_FAULT_NAN_GRAD_AT_STEP", "3"}});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "step 3: the gradient norm is not finite (nan)")) << r.err;
  EXPECT_TRUE(contains(r.err, "stopped before any weight was changed")) << r.err;
  EXPECT_TRUE(contains(r.err, "--on-nonfinite skip")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000002\n");
  EXPECT_EQ(expect_checkpoints_finite(runp), 2);
  // The run resumes past the fault once it is gone, to the uninterrupted result.
  const RunState ref = reference(6);
  const Outcome resumed = run(resume_args(runp, 6));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  expect_identical(read_state(runp), ref, "resumed after a stop on a NaN gradient");
}

TEST_F(CrashSafety, NanGradientSkippedLeavesWeightsAndMomentsUntouched) {
  const std::string runp = dir.file("run");
  const Env nan_at_3 = {{"CHAINLM_FAULT_NAN_GRAD_AT_STEP", "3"}};
  Env nan_at_3_then_kill = nan_at_3;
  nan_at_3_then_kill.push_back({"CHAINLM_CRASH_AT", "checkpoint.after_prune:3"});
  Outcome r = run(train_args(runp, 6, {"--on-nonfinite", "skip"}), nan_at_3_then_kill);
  ASSERT_EQ(r.signal, SIGKILL) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: step 3 skipped")) << r.err;
  EXPECT_TRUE(contains(r.err, "the gradient norm is not finite")) << r.err;
  // Step 3 changed nothing: its checkpoint's weights and moments are step 2's, bit for bit.
  EXPECT_TRUE(read_bytes(runp + "/step-00000002/model.safetensors") ==
              read_bytes(runp + "/step-00000003/model.safetensors"));
  EXPECT_TRUE(read_bytes(runp + "/step-00000002/optimizer.safetensors") ==
              read_bytes(runp + "/step-00000003/optimizer.safetensors"));
  const auto state = nlohmann::json::parse(read_bytes(runp + "/step-00000003/trainer_state.json"));
  EXPECT_EQ(state["skipped_steps"], 1);
  // The run goes on (resumed here, which must match an uninterrupted skipping run exactly:
  // AdamW's step count, which skipped steps do not advance, is part of the checkpoint).
  r = run(resume_args(runp, 6), nan_at_3);
  ASSERT_EQ(r.code, 0) << r.err;
  const RunState got = read_state(runp);
  EXPECT_EQ(got.skipped, (std::map<long, std::string>{{3, "the gradient norm is not finite (nan)"}}));
  EXPECT_EQ(got.loss.size(), 5u);  // steps 1, 2, 4, 5, 6
  for (const auto& [s, l] : got.loss) EXPECT_TRUE(std::isfinite(l)) << s;
  const std::string straight = dir.file("straight");
  r = run(train_args(straight, 6, {"--on-nonfinite", "skip"}), nan_at_3);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_identical(got, read_state(straight), "skipping run, resumed after the skip");
  // The weights did move after the skipped step.
  const RunState unskipped = reference(6);
  EXPECT_FALSE(got.weights == unskipped.weights);
  EXPECT_EQ(got.loss.at(2), unskipped.loss.at(2));
}

TEST_F(CrashSafety, SkippingGivesUpAfterTooManyNonFiniteStepsInARow) {
  const std::string runp = dir.file("run");
  const Outcome r = run(train_args(runp, 12, {"--on-nonfinite", "skip", "--max-nonfinite-skips", "3"}),
                        {{"CHAINLM_FAULT_NAN_GRAD_AT_STEP", "2,4-12"}});
  EXPECT_EQ(r.code, 1);
  // Step 2 alone is skipped and 3 trains; 4, 5, 6 are skipped, 7 is one too many.
  EXPECT_TRUE(contains(r.err, "warning: step 2 skipped")) << r.err;
  EXPECT_TRUE(contains(r.err, "(3 in a row, 4 in all)")) << r.err;
  EXPECT_TRUE(contains(r.err, "step 7: the gradient norm is not finite (nan) after 3 skipped step(s) "
                              "in a row (--max-nonfinite-skips 3); giving up")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000006\n");
  EXPECT_GT(expect_checkpoints_finite(runp), 0);
}

TEST_F(CrashSafety, DivergenceNeverReachesACheckpoint) {
  // An absurd learning rate: the first update throws the weights so far that the next step's
  // loss is not finite (stop), or, larger still, makes the weights themselves non-finite, which
  // the checkpoint writer refuses.
  struct Case {
    std::string lr, mode, expect;
  };
  const std::vector<Case> cases = {
      {"1e3", "stop", "step 2: the loss is not finite"},
      {"1e3", "skip", "giving up"},
      {"1e38", "stop", "refusing to write checkpoint"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.lr + " " + c.mode);
    const std::string runp = dir.file("run_" + c.lr + c.mode);
    const Outcome r = run(train_args(runp, 20, {"--lr", c.lr, "--warmup", "0", "--on-nonfinite", c.mode}));
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(contains(r.err, c.expect)) << r.err;
    EXPECT_TRUE(contains(r.err, "not finite")) << r.err;
    expect_checkpoints_finite(runp);
    EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
    if (fs::exists(runp + "/latest")) {
      expect_loadable(runp, c.lr);
    }
  }
}

// `args` on 2 MPI ranks with one extra environment variable.
Outcome run_mpi(const TempDir& dir, const Args& args, const std::string& env) {
  std::string cmd = testing::mpirun_command(2) + " -x " + env;
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " >" + dir.file("mpi.out") + " 2>" + dir.file("mpi.err");
  const int status = std::system(cmd.c_str());
  Outcome r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_bytes(dir.file("mpi.err"));
  return r;
}

TEST_F(CrashSafety, FailedCheckpointEndsEveryMpiRankWithOneMessage) {
  // Rank 0 writes; its second checkpoint fails (ENOSPC injected): every rank ends with its
  // message, printed once, without MPI_Abort; the first checkpoint stays the latest.
  const std::string runp = dir.file("run");
  const Outcome r =
      run_mpi(dir, train_args(runp, 4), "CHAINLM_WRITE_ERROR_AT=atomic_file.write:11");
  EXPECT_NE(r.code, 0);
  const std::string message = "checkpoint at step 2 not written";
  const size_t at = r.err.find(message);
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(message, at + 1), std::string::npos) << "printed twice:\n" << r.err;
  EXPECT_TRUE(contains(r.err, "No space left on device")) << r.err;
  EXPECT_FALSE(contains(r.err, "MPI_ABORT")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000001\n");
  EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
}

TEST_F(CrashSafety, NonFiniteDecisionsAgreeAcrossMpiRanks) {
  // The NaN gradient appears on the last rank only; rank 0 (the writer) sees it through the
  // gradient sum, and both ranks stop, or skip, together.
  auto mpi = [&](const Args& args, const std::string& env) { return run_mpi(dir, args, env); };
  const std::string stop = dir.file("stop"), skip = dir.file("skip");
  Outcome r = mpi(train_args(stop, 5), "CHAINLM_FAULT_NAN_GRAD_AT_STEP=3");
  EXPECT_NE(r.code, 0);
  const std::string message = "step 3: the gradient norm is not finite (nan); stopped";
  const size_t at = r.err.find(message);
  EXPECT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(message, at + 1), std::string::npos) << "one message, not one per rank:\n" << r.err;
  EXPECT_FALSE(contains(r.err, "MPI_ABORT")) << r.err;
  EXPECT_EQ(read_bytes(stop + "/latest"), "step-00000002\n");
  EXPECT_EQ(expect_checkpoints_finite(stop), 2);

  r = mpi(train_args(skip, 3, {"--on-nonfinite", "skip"}), "CHAINLM_FAULT_NAN_GRAD_AT_STEP=3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(read_bytes(skip + "/step-00000002/model.safetensors") ==
              read_bytes(skip + "/step-00000003/model.safetensors"));
  EXPECT_EQ(read_state(skip).skipped.size(), 1u);
}

}  // namespace
}  // namespace chainlm
