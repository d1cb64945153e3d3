#pragma once
// A training run directory and its crash-safe protocol (docs/reliability.md, Crash safety):
//   .lock          held (flock) by the one process training into the directory
//   metrics.jsonl  one JSON line per step, validation and event, appended and flushed
//   step-NNNNNNNN/ complete checkpoints; a new one is built under a temporary name, every file
//                  and the directory fsynced, renamed into place, and only then named by
//   latest         the checkpoint loaders and resumes read; older checkpoints are pruned last.
// A writer killed at any moment leaves `latest` naming a complete checkpoint and, at most,
// temporary entries that prepare() removes. Only rank 0 of a run touches the directory.
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace chainlm {

class RunDirectory {
 public:
  explicit RunDirectory(std::string path) : path_(std::move(path)) {}
  ~RunDirectory() { unlock(); }
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  const std::string& path() const { return path_; }

  // Creates the directory and checks it is writable, takes the lock so no other process trains
  // into it meanwhile (a filesystem without flock is used unlocked), and removes what a killed
  // writer left (temporary checkpoint directories, temporary files). Throws chainlm::Error
  // naming the directory when it cannot be used; a directory it made is then removed.
  void prepare();
  // Takes the lock of an existing run directory (a no-op when held): a resume takes it before
  // it moves later checkpoints aside or truncates the log, so a resume refused because another
  // process trains there changes nothing. Throws chainlm::Error when another process holds it.
  void lock();
  // Fails as lock() does when another process trains into `path` now, writing nothing and
  // holding no lock: a resume checks before it reads the checkpoint, which that process may
  // prune while it is read ("no such file", "holds no tokenizer: copy one into it").
  static void refuse_if_training(const std::string& path);
  // Throws chainlm::Error naming the directory when a checkpoint could not be written into it
  // (a write probe fails, or its paths would be too long).
  void check_writable() const;
  // Releases the lock (a no-op when not held).
  void unlock();
  // For a resume with nothing to train: removes what a writer killed at the end of the run
  // left (an old checkpoint it was removing), which prepare() would have; best effort, and
  // only when there is such a leftover and the lock can be had, so a finished run on a
  // read-only copy, or one another process trains, is left as it is.
  void tidy_finished();

  // Writes the checkpoint of `step`: fill(dir) writes its files into a temporary directory
  // (each with write_file_atomic or an equivalent that fsyncs), which is fsynced, renamed to
  // step-NNNNNNNN and named by `latest`; then all but the `keep` newest checkpoints up to
  // `step` are removed, and any of later steps (a killed run's, never named). On failure
  // nothing is left behind, `latest` is unchanged and chainlm::Error says what and where.
  // Returns the checkpoint directory.
  std::string write_checkpoint(long step, int keep,
                               const std::function<void(const std::string&)>& fill);
  // The step-NNNNNNNN path of a step's checkpoint (whether or not it exists).
  std::string checkpoint_path(long step) const;
  // The newest checkpoint this run wrote or resumed from ("" when none); set_last_checkpoint
  // records the one a resume started from.
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  void set_last_checkpoint(std::string dir) { last_checkpoint_ = std::move(dir); }
  // The checkpoint directories (names) of steps after `step`, oldest first.
  std::vector<std::string> checkpoints_after(long step) const;
  // A resume from `step` while checkpoints of later steps exist (`latest` pointed back by hand,
  // or a checkpoint a killed writer completed but never named), or a new run (step -1) where
  // checkpoints no `latest` names exist: moves them, and the metrics lines after `step`, into a
  // new superseded-<time>/ directory of the run, so that nothing is overwritten or deleted. A
  // new run also moves the log of an earlier one that trained steps but wrote no checkpoint.
  // Returns that directory ("" when there was nothing to move) and the checkpoints moved
  // ("step-00000004, step-00000006"; "" for a log alone), for the message, apart from the
  // directories named like checkpoints that hold none (io/run_path.h is_checkpoint_dir), moved
  // as well.
  struct Superseded {
    std::string dir, checkpoints, others;
  };
  // Takes the run's lock first when it has something to move.
  Superseded supersede_after(long step);
  // What error messages say of the checkpoints a failure leaves in place.
  std::string what_is_kept() const;

  // metrics.jsonl: append one line (flushed; Error naming the file and the reason on failure),
  // start it empty (a new run), or keep only the lines of steps <= step (a resume, so the log
  // reads as one uninterrupted run; a torn last line from a crash is dropped).
  // (Warns once when the log it appended to before is gone: the run directory emptied mid-run.)
  void append_metrics(const nlohmann::json& line) const;
  void reset_metrics() const;
  void truncate_metrics(long step);  // (takes the lock when it has lines to drop)
  // Fails naming the first line of metrics.jsonl that is not JSON, unless it is a torn last line
  // (what a crash leaves, and truncate_metrics drops): a resume checks before it changes anything.
  void check_metrics_lines() const;

 private:
  std::string path_;
  std::string last_checkpoint_;
  int lock_fd_ = -1;
  std::set<std::string> warned_kept_;  // old checkpoints kept for foreign files, warned of once
  mutable bool log_started_ = false, log_loss_warned_ = false;  // append_metrics' memory
};

}  // namespace chainlm
