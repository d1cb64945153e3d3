#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"
#include "core/fault_injection.h"

namespace chainlm {
namespace {

std::string parent_directory(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Unique within the process (counter) and across processes (pid), so concurrent writers of
// the same target never share a temporary file.
std::string temporary_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return cat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, [&bytes](std::FILE* f) {
    if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  });
}

void write_new_file_atomic(const std::string& path, const std::string& bytes,
                           const std::string& what) {
  AtomicFile out(path);
  errno = 0;
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), out.file());
  out.commit(what);
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer) {
  AtomicFile out(path);
  // errno is cleared first so that, when the stream reports an error afterwards, it holds the
  // failed write's reason (ENOSPC, EDQUOT, EFBIG, EIO...) for the message.
  errno = 0;
  writer(out.file());  // an exception leaves through ~AtomicFile, which removes the temporary
  out.commit();
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  CHAINLM_CHECK(!path_.empty(), "write_file_atomic: empty output path");
  remove_stale_temporaries(parent_directory(path_),
                           std::filesystem::path(path_).filename().string() + ".tmp.");
  tmp_ = temporary_path_for(path_);
  // O_EXCL: never follow or reuse something already sitting at the temporary name.
  int fd = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    // A legal name of ~240-255 bytes: its temporary sibling is the one too long, which the
    // message blamed on the name without saying so.
    const std::string name = std::filesystem::path(path_).filename().string();
    const std::string tmp_name = std::filesystem::path(tmp_).filename().string();
    if (err == ENAMETOOLONG && name.size() <= 255 && tmp_name.size() > 255)
      fail("cannot write ", path_, ": its name is ", name.size(),
           " bytes, and the temporary file it is written "
           "through (",
           tmp_name.size() - name.size(),
           " bytes more) passes the 255 a file name may have; choose a "
           "name of at most ",
           255 - (tmp_name.size() - name.size()), " bytes");
    fail("cannot write ", path_, ": creating ", tmp_, " failed: ", std::strerror(err));
  }
  f_ = ::fdopen(fd, "w+b");
  if (!f_) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp_.c_str());
    fail("cannot write ", path_, ": fdopen failed: ", std::strerror(err));
  }
}

AtomicFile::~AtomicFile() {
  if (!f_) return;  // committed, or failed and cleaned up
  std::fclose(f_);
  ::unlink(tmp_.c_str());
}

void AtomicFile::fail_write(const std::string& what, int err) {
  if (f_) std::fclose(f_);
  f_ = nullptr;
  ::unlink(tmp_.c_str());
  fail("cannot write ", path_, ": ", what, err ? ": " : "", err ? std::strerror(err) : "");
}

void AtomicFile::commit() {
  commit("");
}

void AtomicFile::sync() {
  CHAINLM_CHECK(f_ != nullptr, "cannot write ", path_, ": already committed");
  if (synced_) return;
  if (std::ferror(f_)) fail_write("write failed", errno ? errno : EIO);
  if (int injected = fault::write_error("atomic_file.write")) fail_write("write failed", injected);
  fault::point("atomic_file.after_data");  // the data is (partly) in the temp file, unsynced
  if (std::fflush(f_) != 0) fail_write("write failed", errno);
  if (::fsync(::fileno(f_)) != 0) fail_write("fsync failed", errno);
  synced_ = true;
}

void AtomicFile::commit(const std::string& new_for) {
  sync();
  int rc = std::fclose(f_);
  f_ = nullptr;
  if (rc != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    fail("cannot write ", path_, ": close failed: ", std::strerror(err));
  }
  fault::point("atomic_file.before_rename");  // a complete temp file beside the old target
  if (!new_for.empty()) {
    try {
      rename_no_replace(tmp_, path_, new_for);
    } catch (...) {
      ::unlink(tmp_.c_str());
      throw;
    }
  } else if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    fail("cannot write ", path_, ": rename failed: ", std::strerror(err));
  }
  fsync_directory(parent_directory(path_));
}

std::string read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot read ", path, ": ", std::strerror(errno));
  std::string bytes;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, n);
  bool bad = std::ferror(f);
  int err = errno;
  std::fclose(f);
  if (bad) fail("cannot read ", path, ": ", std::strerror(err));
  return bytes;
}

void rename_no_replace(const std::string& from, const std::string& to, const std::string& what) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return;
  int err = errno;
  if (err == EINVAL ||
      err == ENOSYS) {  // a filesystem without RENAME_NOREPLACE: check, then rename
    std::error_code ec;
    CHAINLM_CHECK(!std::filesystem::exists(to, ec), to, " appeared while ", what,
                  " was writing it; nothing was overwritten");
    if (::rename(from.c_str(), to.c_str()) == 0) return;
    err = errno;
  }
  CHAINLM_CHECK(err != EEXIST && err != ENOTEMPTY, to, " appeared while ", what,
                " was writing it; nothing was overwritten");
  fail("cannot rename ", from, " to ", to, ": ", std::strerror(err));
}

void remove_stale_temporaries(const std::string& dir, const std::string& prefix) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    size_t i = prefix.size();
    long pid = 0;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9' && pid < (1L << 31))
      pid = pid * 10 + (name[i++] - '0');
    if (i == prefix.size() || pid <= 0 || pid >= (1L << 31)) continue;
    // The temporaries' own forms only: PREFIX PID, or PREFIX PID.N (another output's name that
    // merely starts like it, ".tmp-out-2-PID" for ".tmp-out-", is not one).
    std::string rest = name.substr(i);
    // A temporary file of that temporary, PREFIX PID .tmp. PID .N: export writes its GGUF file
    // through write_file_atomic into out.tmp-PID, and a kill then left out.tmp-PID.tmp.PID.0.
    const std::string nested = cat(".tmp.", pid, ".");
    if (rest.compare(0, nested.size(), nested) == 0) rest = rest.substr(nested.size() - 1);
    if (!rest.empty() && (rest.size() < 2 || rest[0] != '.' ||
                          rest.find_first_not_of("0123456789", 1) != std::string::npos))
      continue;
    if (::kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to ask): kept
    std::error_code rm;
    fs::remove_all(it->path(), rm);
  }
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory ", dir, " to fsync it: ", std::strerror(errno));
  // Some filesystems cannot fsync a directory (EINVAL); there is nothing more to make durable.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    int err = errno;
    ::close(fd);
    fail("fsync of directory ", dir, " failed: ", std::strerror(err));
  }
  ::close(fd);
}

void write_directory_atomic(const std::string& out_arg,
                            const std::function<void(const std::string&)>& fill,
                            const std::string& what) {
  namespace fs = std::filesystem;
  fs::path out = fs::path(out_arg).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();  // "dir/" names dir
  CHAINLM_CHECK(!out.empty() && out != "." && out != "..", what, ": --out '", out_arg,
                "' does not name a new directory");
  std::error_code ec;
  CHAINLM_CHECK(!fs::exists(out, ec), what, ": ", out.string(),
                " already exists; choose another --out (nothing was overwritten)");
  const fs::path parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  const fs::path tmp = parent / cat(".tmp-", out.filename().string(), "-", ::getpid());
  try {
    remove_stale_temporaries(parent.string(), cat(".tmp-", out.filename().string(), "-"));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    fill(tmp.string());
    fsync_directory(tmp.string());
    rename_no_replace(tmp.string(), out.string(), what);
    fsync_directory(parent.string());
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    if (const auto* fe = dynamic_cast<const fs::filesystem_error*>(&e))
      fail(what, ": cannot write ", out.string(), ": ", fe->code().message(), " (nothing was written)");
    throw;
  }
}

std::string temp_directory() {
  const char* env = std::getenv("TMPDIR");
  if (!env || !*env) return "/tmp";
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(env, ec);
  CHAINLM_CHECK(dir, "TMPDIR=", env, " is not a directory",
                ec && ec != std::errc::no_such_file_or_directory ? cat(" (", ec.message(), ")")
                                                                 : std::string(),
                "; chainlm makes its temporary files there: set TMPDIR to a directory it may "
                "write, or unset it for /tmp");
  return env;
}

}  // namespace chainlm
