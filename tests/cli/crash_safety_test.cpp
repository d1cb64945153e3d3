// Crash safety of `chainlm train`, through the real binary (docs/reliability.md): SIGKILL at
// every stage of a checkpoint write and at random moments, a really full disk (a small tmpfs in
// a private mount namespace), read-only and unwritable run directories, before training and
// mid-run. Every interrupted run must leave its last complete checkpoint loadable and resume to
// final weights, optimizer moments and per-step losses bit-identical to an uninterrupted run.
// Numerical faults: nonfinite_training_test.cpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "crash_safety_fixture.h"

namespace chainlm {
namespace {

using namespace crash_safety_test;  // the fixture CrashSafety, RunState and the run helpers

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

}  // namespace
}  // namespace chainlm
