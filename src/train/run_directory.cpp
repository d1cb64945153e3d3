#include "train/run_directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/fault_injection.h"
#include "io/atomic_file.h"
#include "io/run_path.h"

namespace chainlm {

namespace fs = std::filesystem;

namespace {

// A metrics line written after the checkpoint of `step`: a later step's, or the "resumed" event
// at that step, which opened the branch going on from it (a resume from there again left it in
// the log above its own).
bool after_checkpoint(const nlohmann::json& line, long step) {
  const long s = line.value("step", 0L);
  return s > step || (s == step && line.value("event", "") == "resumed");
}

std::string checkpoint_name(long step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08ld", step);
  return name;
}

// What a writer killed mid-way leaves in a run directory: temporary checkpoint directories
// (being built, or an old one being removed) and atomic_file's temporary files.
bool is_leftover(const std::string& name) {
  for (const char* prefix :
       {".tmp-step-", ".old-step-", ".write-probe.", "latest.tmp.", "metrics.jsonl.tmp."})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

// The leftovers in a run directory (is_leftover).
std::vector<fs::path> leftovers_in(const fs::path& run) {
  std::error_code ec;
  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(run, ec))
    if (is_leftover(e.path().filename().string())) found.push_back(e.path());
  return found;
}

void remove_paths(const std::vector<fs::path>& paths) {
  for (const fs::path& p : paths) {
    std::error_code ignored;
    fs::remove_all(p, ignored);
  }
}

// The checkpoint `run/latest` names, "" when there is none (or it cannot be read).
std::string latest_name(const fs::path& run) {
  try {
    return read_latest_name(run.string());
  } catch (const Error&) {
    return std::string();
  }
}

// Moves the complete directory `tmp` to `target`. A `target` that exists already (a checkpoint
// of this step that a killed run wrote but never named in `latest`) is swapped with it
// atomically, so a complete directory stands at `target` at every moment.
void install_directory(const fs::path& tmp, const fs::path& target) {
  std::error_code ec;
  if (!fs::exists(target, ec)) {
    fs::rename(tmp, target, ec);
    if (ec) fail("cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
    const int err = errno;
    // A filesystem without atomic exchange: a directory `latest` does not name may go first.
    const bool unsupported = err == EINVAL || err == ENOSYS || err == EOPNOTSUPP;
    if (!unsupported || latest_name(target.parent_path()) == target.filename().string())
      fail("cannot replace ", target.string(), " with ", tmp.string(), ": ", std::strerror(err));
    fs::remove_all(target, ec);
    if (!ec) fs::rename(tmp, target, ec);
    if (ec) fail("cannot replace ", target.string(), ": ", ec.message());
    return;
  }
  fs::remove_all(tmp, ec);  // now the old directory; a leftover if this fails
}

}  // namespace

namespace {

// A metrics.jsonl that is not a chainlm training log (every line a JSON object with a "step"),
// which a new run's log would replace: a user's file in a directory that is not a run.
void check_metrics_is_ours(const fs::path& run) {
  const fs::path metrics = run / "metrics.jsonl";
  std::error_code ec;
  if (!fs::exists(metrics, ec)) return;
  std::ifstream in(metrics);
  std::string line;
  for (int checked = 0; checked < 3 && std::getline(in, line);) {
    if (line.empty()) continue;
    ++checked;
    bool ours = false;
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      ours = j.is_object() && j.contains("step");
    } catch (const nlohmann::json::exception&) {
    }
    if (!ours)
      fail(metrics.string(), " is not a chainlm training log, and training into ", run.string(),
           " would replace it; choose another --out (nothing was trained or overwritten)");
  }
}

// Whether a run's log records a step trained (not only the header of a run that started).
bool log_has_steps(const fs::path& metrics) {
  std::error_code ec;
  if (!fs::exists(metrics, ec)) return false;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("step", 0L) > 0) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> RunDirectory::checkpoints_after(long step) const {
  std::vector<std::string> names;
  for (auto& [s, name] : run_checkpoints(path_))
    if (s > step) names.push_back(std::move(name));
  return names;
}

RunDirectory::Superseded RunDirectory::supersede_after(long step) {
  const std::vector<std::string> newer = checkpoints_after(step);
  const fs::path run(path_);
  // A new run (step -1) also keeps the log of an attempt that trained steps but stopped before
  // its first checkpoint (a non-finite loss at step 2: the log is the diagnosis).
  if (newer.empty() && (step >= 0 || !log_has_steps(run / "metrics.jsonl"))) return {};
  lock();  // a process training here keeps its checkpoints and log
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::gmtime(&now));
  fs::path dest = run / cat("superseded-", stamp);
  for (int i = 2; fs::exists(dest); ++i) dest = run / cat("superseded-", stamp, "-", i);
  std::error_code ec;
  fs::create_directory(dest, ec);
  if (ec) fail("cannot create ", dest.string(), ": ", ec.message(), " (nothing was changed)");
  // The metrics lines after `step` first: the checkpoints are what the copy refers to.
  const fs::path metrics = run / "metrics.jsonl";
  if (fs::exists(metrics)) {
    std::ifstream in(metrics);
    std::string line, later;
    while (std::getline(in, line)) {
      try {
        if (after_checkpoint(nlohmann::json::parse(line), step)) later += line + "\n";
      } catch (const nlohmann::json::exception&) {
      }
    }
    write_file_atomic((dest / "metrics.jsonl").string(), later);
  }
  std::string names, others;
  for (const std::string& name : newer) {
    // A directory named like a checkpoint that holds none (a user's own step-5/): moved too,
    // but not called a checkpoint (a trial).
    std::string& list = is_checkpoint_dir((run / name).string()) ? names : others;
    fs::rename(run / name, dest / name, ec);
    if (ec) fail("cannot move ", (run / name).string(), " to ", dest.string(), ": ", ec.message());
    list += (list.empty() ? "" : ", ") + name;
  }
  return {dest.string(), names, others};
}

void RunDirectory::prepare() {
  const fs::path run(path_);
  std::error_code ec;
  check_metrics_is_ours(run);
  // What a run that cannot start takes away again: the directories made for it (the run's and
  // missing parents, innermost first) and a .lock it left where none was (the mark of a run
  // that started; a full disk left both, a trial).
  std::vector<fs::path> made;
  for (fs::path p = fs::absolute(run, ec).lexically_normal();
       !p.empty() && !fs::exists(fs::symlink_status(p, ec)); p = p.parent_path()) {
    made.push_back(p);
    if (p == p.parent_path()) break;
  }
  const bool had_lock = fs::exists(run / ".lock", ec);
  fs::create_directories(run, ec);
  if (ec)
    fail("cannot create the run directory ", run.string(), ": ", ec.message(),
         " (nothing was trained)");
  lock();
  try {
    check_writable();
  } catch (...) {
    unlock();
    if (!had_lock) fs::remove(run / ".lock", ec);
    for (const fs::path& dir : made) fs::remove(dir, ec);  // each only when empty
    throw;
  }
  // Leftovers of a writer killed mid-checkpoint: never checkpoints (loaders follow `latest`,
  // which only ever names a complete directory), removed here.
  remove_paths(leftovers_in(run));
}

void RunDirectory::check_writable() const {
  const fs::path run(path_);
  // Checkpoints are written into the directory itself: find out now, not after the first
  // hour of training, whether that works.
  const std::string probe = (run / cat(".write-probe.", ::getpid())).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    if (::write(fd, "x", 1) != 1) err = errno ? errno : EIO;
    if (::close(fd) != 0 && err == 0) err = errno;
    ::unlink(probe.c_str());
  }
  if (err != 0)
    fail("cannot write to the run directory ", run.string(), ": ", std::strerror(err),
         " (nothing was trained)");
  // A checkpoint's files lie deeper than the probe: RUN/.tmp-step-N.PID/NAME.tmp.PID.K, NAME up to
  // "special_tokens_map.json". A RUN within ~80 bytes of PATH_MAX passed the probe and failed at
  // the first checkpoint, its steps lost.
  constexpr size_t kCheckpointPathExtra = 96;
  if (run.string().size() + kCheckpointPathExtra >= PATH_MAX)
    fail("the run directory's path ", run.string().substr(0, 60), "... is ", run.string().size(),
         " bytes: a checkpoint's files need up to ", kCheckpointPathExtra, " more, past the ",
         PATH_MAX - 1, " a path may have; choose a shorter --out (nothing was trained)");
}

namespace {

// lock() and refuse_if_training() found the run's lock held.
[[noreturn]] void fail_training_elsewhere(const std::string& run) {
  fail("another process is training into ", run,
       " (it holds a lock on the directory); nothing was trained");
}

}  // namespace

void RunDirectory::refuse_if_training(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // not a directory (yet): the caller says what is wrong
  const bool busy = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // (closing releases the shared lock)
  if (busy) fail_training_elsewhere(path);
}

void RunDirectory::lock() {
  const fs::path run(path_);
  // The run's lock: a second process training into the same directory would take this
  // one's temporary directories for a killed writer's. flock locks end with the process,
  // however it ends, so a killed run never leaves a stale lock behind.
  // The lock is taken on the directory itself: on the .lock file, a user removing that "stale"
  // file let a second trainer in beside the first (both wrote one log and their checkpoints).
  // The file stays as the mark that a run started here.
  if (lock_fd_ >= 0) return;
  const std::string lock = (run / ".lock").string();
  // Read-only: an open writable file would keep the filesystem from being remounted.
  const int mark = ::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  if (mark < 0)
    fail("cannot write to the run directory ", run.string(), ": creating ", lock,
         " failed: ", std::strerror(errno), " (nothing was trained)");
  ::close(mark);
  const int fd = ::open(run.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    fail("cannot open the run directory ", run.string(), ": ", std::strerror(errno),
         " (nothing was trained)");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) fail_training_elsewhere(run.string());
    // A filesystem without flock (some network mounts): train unlocked, as before locks.
  } else {
    lock_fd_ = fd;
  }
}

void RunDirectory::unlock() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
}

void RunDirectory::tidy_finished() {
  const std::vector<fs::path> leftovers = leftovers_in(path_);
  if (leftovers.empty()) return;
  try {
    lock();
  } catch (const Error&) {
    return;
  }
  remove_paths(leftovers);
  unlock();
}

std::string RunDirectory::checkpoint_path(long step) const {
  return (fs::path(path_) / checkpoint_name(step)).string();
}

namespace {

// The run directory moved or removed while the run trained (`mv RUN RUN2`, `rm -rf RUN`): what
// failed then is said to be that, not a missing file in it.
bool run_directory_gone(const std::string& run) {
  std::error_code ec;
  return !fs::exists(run, ec) && !ec;
}

std::string gone_message(const std::string& run) {
  return cat("the run directory ", run,
             " no longer exists (moved or removed while the run trained?)");
}

}  // namespace

std::string RunDirectory::what_is_kept() const {
  return last_checkpoint_.empty() ? std::string("no earlier checkpoint exists")
                                  : cat("'latest' still names the previous one, ",
                                        fs::path(last_checkpoint_).filename().string());
}

std::string RunDirectory::write_checkpoint(long step, int keep,
                                           const std::function<void(const std::string&)>& fill) {
  const std::string name = checkpoint_name(step);
  const fs::path run(path_);
  const fs::path final_dir = run / name;
  const std::string kept = what_is_kept();
  // Built under a temporary name, every file fsynced (write_file_atomic), the directory
  // fsynced, then renamed into place and the run directory fsynced: `latest` is switched
  // only to a complete, durable directory.
  const fs::path tmp = run / cat(".tmp-", name, ".", ::getpid());
  try {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp, ec);
    if (ec) fail("cannot create ", tmp.string(), ": ", ec.message());
    // The log up to this step becomes as durable as the checkpoint: a resume keeps exactly
    // those lines, even after a power loss.
    const std::string metrics = (run / "metrics.jsonl").string();
    const int log = ::open(metrics.c_str(), O_RDONLY | O_CLOEXEC);
    if (log >= 0) {
      const int rc = ::fsync(log), err = errno;
      ::close(log);
      if (rc != 0 && err != EINVAL) fail("fsync of ", metrics, " failed: ", std::strerror(err));
    }
    fill(tmp.string());
    fsync_directory(tmp.string());
    fault::point("checkpoint.before_rename");
    install_directory(tmp, final_dir);
    fsync_directory(run.string());
  } catch (const std::exception& e) {
    // The run directory moved or removed while the run trained (the partial, if any, went
    // with it, and the next resume where it is now removes it): said so, rather than the
    // removal of a partial that was never here.
    std::error_code ec;
    const bool run_gone = run_directory_gone(path_);
    const std::uintmax_t removed = run_gone ? 0 : fs::remove_all(tmp, ec);
    fail("checkpoint at step ", step, " not written: ", e.what(), "; ",
         run_gone ? gone_message(path_) : kept,
         ec        ? cat("; the partial ", tmp.string(), " could not be removed (", ec.message(),
                         "): it is no checkpoint, and the next run removes it")
         : removed ? cat(", and the partial ", tmp.filename().string(), " was removed")
                   : std::string());
  }
  fault::point("checkpoint.before_latest");
  try {
    write_file_atomic((run / "latest").string(), name + "\n");
  } catch (const std::exception& e) {
    fail("checkpoint ", final_dir.string(),
         " was written but could not be made the latest: ", e.what(), "; ", kept);
  }
  last_checkpoint_ = final_dir.string();
  fault::point("checkpoint.after_latest");
  // Only now that `latest` names the new checkpoint may older ones go: the `keep` newest up
  // to this step stay. Directories of later steps are a killed run's that `latest` never
  // named. Each is renamed away first, so a half-removed one never looks like a checkpoint.
  const auto ckpts = run_checkpoints(run.string());
  keep = std::max(1, keep);
  std::vector<fs::path> doomed;
  int kept_count = 0;  // newest first: this step's directory is the first one kept
  for (auto it = ckpts.rbegin(); it != ckpts.rend(); ++it) {
    if (it->first <= step && kept_count < keep)
      ++kept_count;
    else
      doomed.push_back(run / it->second);
  }
  std::error_code ec;
  // A checkpoint holding files the run did not write (an export into it, the user's notes) is
  // kept, with a word: pruning deleted them with it. The run's own are the names the checkpoint
  // just written holds, as every checkpoint of a run holds the same.
  std::vector<std::string> own;
  for (fs::directory_iterator it(final_dir, ec), end; !ec && it != end; it.increment(ec))
    own.push_back(it->path().filename().string());
  // A directory named like a checkpoint without the trainer's state was not written by a run
  // (an `expand` or import output given a step-like name in the run): kept too (pruning
  // deleted one, a user trial).
  for (auto path = doomed.begin(); path != doomed.end();) {
    std::string foreign;
    for (fs::directory_iterator it(*path, ec), end; !ec && it != end; it.increment(ec))
      if (const std::string n = it->path().filename().string();
          std::find(own.begin(), own.end(), n) == own.end())
        foreign += cat(foreign.empty() ? "" : ", ", n);
    ec.clear();
    const bool trained = fs::exists(*path / "trainer_state.json", ec);
    if (foreign.empty() && trained) {
      ++path;
      continue;
    }
    if (warned_kept_.insert(path->string()).second)
      std::fprintf(stderr,
                   "warning: kept the old checkpoint %s, which the run would prune (it keeps its "
                   "newest checkpoints): %s; remove it yourself when %s\n",
                   path->string().c_str(),
                   !foreign.empty()
                       ? cat("it holds files the run did not write (", foreign, ")").c_str()
                       : "it holds no trainer_state.json, so no run wrote it (an expand "
                         "or import output named like a checkpoint?)",
                   !foreign.empty() ? "they are safe elsewhere" : "you no longer need it");
    path = doomed.erase(path);
  }
  ec.clear();
  for (const fs::path& path : doomed) {
    const fs::path old = run / cat(".old-", path.filename().string(), ".", ::getpid());
    fs::rename(path, old, ec);
    if (!ec) fs::remove_all(old, ec);
    if (ec)
      std::fprintf(stderr, "warning: could not remove the old checkpoint %s: %s\n",
                   path.string().c_str(), ec.message().c_str());
  }
  fault::point("checkpoint.after_prune");
  return final_dir.string();
}

void RunDirectory::append_metrics(const nlohmann::json& line) const {
  const std::string path = (fs::path(path_) / "metrics.jsonl").string();
  // `rm -rf RUN` mid-run: the log (and the lock's mark) went, and a new log started mid-way
  // with nothing said; `report` then counted the steps from there.
  // A run directory moved away (`mv RUN RUN2`) is said so, not warned of as an emptied one;
  // looked for only when something is missing or fails, not at every line.
  std::error_code ec;
  const long step = line.value("step", 0L);
  auto fail_if_run_gone = [&] {
    if (run_directory_gone(path_))
      fail("cannot append to ", path, " (the line of step ", step, "): ", gone_message(path_), "; ",
           what_is_kept());
  };
  if (log_started_ && !log_loss_warned_ && !fs::exists(path, ec)) {
    fail_if_run_gone();
    log_loss_warned_ = true;
    std::fprintf(stderr,
                 "warning: %s was removed while this run wrote it (the run directory emptied?); "
                 "the log goes on in a new file from step %ld, without the lines before\n",
                 path.c_str(), step);
  }
  log_started_ = true;
  const std::string text = line.dump() + "\n";
  // Where the line starts: a failed append is cut back to there, so that no half line is left
  // for plot, report and other readers (a full disk left one, a trial).
  const uintmax_t size_before = fs::file_size(path, ec);
  const bool had_size = !ec;
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "a");
  bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  int err = errno;
  if (const int injected = fault::write_error("metrics.append")) {  // a disk full here (tests)
    ok = false;
    err = injected;
  }
  if (f && std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    fail_if_run_gone();
    if (had_size && ::truncate(path.c_str(), static_cast<off_t>(size_before)) != 0) {
      // (not cut back: the failure below is what the user must see, and resume drops a torn line)
    }
    fail("cannot append to ", path, " (the line of step ", step,
         "): ", std::strerror(err ? err : EIO), "; ", what_is_kept(),
         last_checkpoint_.empty() ? std::string() : ": chainlm train --resume goes on from it");
  }
}

void RunDirectory::reset_metrics() const {
  write_file_atomic((fs::path(path_) / "metrics.jsonl").string(), "");
}

void RunDirectory::check_metrics_lines() const {
  const fs::path metrics = fs::path(path_) / "metrics.jsonl";
  std::error_code ec;
  if (!fs::exists(metrics, ec)) return;
  const std::string all = read_file(metrics.string());
  std::istringstream in(all);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (nlohmann::json::accept(line)) continue;
    // A torn last line from a crash (no newline after it) is chainlm's to drop. Any other line
    // that is not JSON was written by hand (a note): the resume dropped it with the rest, unsaid.
    CHAINLM_CHECK(in.eof() && all.back() != '\n', metrics.string(), ":", number,
                  " is not JSON (written by hand?); the log is chainlm's, read line by line by "
                  "plot and report: remove the line or make it a JSON object, then resume "
                  "(nothing was changed)");
  }
}

void RunDirectory::truncate_metrics(long step) {
  const fs::path metrics = fs::path(path_) / "metrics.jsonl";
  if (!fs::exists(metrics)) return;
  const std::string all = read_file(metrics.string());
  std::istringstream in(all);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (!after_checkpoint(j, step)) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // A torn last line from a crash: dropped (check_metrics_lines refused any other).
    }
  }
  // Nothing to drop: the file is left alone (a finished run resumed on a read-only mount, to
  // find it has nothing left to do, must not fail writing the log it already has).
  if (kept == all) return;
  lock();  // a process training here keeps its log
  write_file_atomic(metrics.string(), kept);
}

}  // namespace chainlm
