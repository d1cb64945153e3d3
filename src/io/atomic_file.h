#pragma once
// Crash-safe file output: a reader of `path` sees either the old file or the complete new one,
// never a torn write. Checkpoints, token shards and tokenizers are all written this way.
#include <cstdio>
#include <functional>
#include <string>

namespace chainlm {

// Writes `bytes` to a temporary file beside `path`, flushes and fsyncs it, renames it over
// `path` and fsyncs the directory. On any failure the temporary file is removed, an existing
// `path` is left untouched, and chainlm::Error names the path and the system error.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Streaming variant for outputs too large to build in memory: `writer` fills the temporary
// file. Write errors inside `writer` are caught afterwards through ferror(), so the writer may
// ignore fwrite's return value; an exception thrown by `writer` aborts the write the same way.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);

// The same for a file that must not exist: of two writers racing for one new name, the second
// fails with "`path` appeared while `what` was writing it; nothing was overwritten" (two
// `tokenizer train` runs both said they wrote --out, and one tokenizer silently replaced the
// other).
void write_new_file_atomic(const std::string& path, const std::string& bytes,
                           const std::string& what);

// The same protocol for a writer that is not one callback: several outputs filled side by side,
// or a file read back and edited before it is complete (token shards). The temporary file is
// open for reading and writing from construction; commit() flushes, fsyncs and renames it over
// `path`; destruction without a commit removes it and leaves `path` untouched.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  std::FILE* file() const { return f_; }
  const std::string& path() const { return path_; }
  // Flushes and fsyncs the temporary file, so that what can fail for want of space fails
  // here, before any output is replaced (commit() after it only renames); throws as commit().
  void sync();
  // Throws chainlm::Error naming the path and the system error, the temporary file removed.
  void commit();
  // commit, unless `path` exists by then: that is an error naming `new_for` (rename_no_replace).
  void commit(const std::string& new_for);
  // For a writer that finds an error itself (a short fwrite): removes the temporary file and
  // throws "cannot write PATH: what: strerror(err)".
  [[noreturn]] void fail_write(const std::string& what, int err);

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool synced_ = false;  // sync() done: nothing may be written after it
};

// Where temporary files go: $TMPDIR, or /tmp when it is unset or empty (as POSIX and mktemp
// read it; std::filesystem::temp_directory_path failed on an empty one). A TMPDIR that is not a
// directory is a chainlm::Error naming it.
std::string temp_directory();

// The whole file as bytes; chainlm::Error naming the path when it cannot be read.
std::string read_file(const std::string& path);

// Renames `from` to `to` unless `to` exists, in one step (renameat2 RENAME_NOREPLACE, for files
// and directories): of two writers racing for one new name, one wins and the other fails with
// "`to` appeared while `what` was writing it; nothing was overwritten" instead of replacing it.
void rename_no_replace(const std::string& from, const std::string& to, const std::string& what);

// Removes what writers killed part-way (Ctrl-C, a kill, a crash) left in `dir`: entries named
// `prefix` + PID or `prefix` + PID + "." + N, whose PID is no running process. A live writer's
// are kept.
void remove_stale_temporaries(const std::string& dir, const std::string& prefix);

// Makes a rename or file creation inside `dir` durable.
void fsync_directory(const std::string& dir);

// Writes a new directory `out` (which must not exist; a trailing '/' is allowed): fill(tmp)
// writes its files into a temporary directory beside it, which is then fsynced and renamed to
// `out`. On any failure the temporary directory is removed and chainlm::Error says what (`what`:
// "export") could not write where, with the system's reason, never a raw filesystem error.
void write_directory_atomic(const std::string& out, const std::function<void(const std::string&)>& fill,
                            const std::string& what);

}  // namespace chainlm
