#include "io/atomic_file.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <stdexcept>

#include "core/error.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::count_entries;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

// Caps the size of any file this process writes, so a write fails as it would on a full disk
// (EFBIG instead of ENOSPC; both are short writes). SIGXFSZ is ignored so the write returns.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = saved_;
    lim.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

TEST(AtomicFile, WritesAndReplaces) {
  TempDir dir;
  const std::string path = dir.file("a.txt");
  write_file_atomic(path, std::string("first"));
  EXPECT_EQ(read_bytes(path), "first");
  write_file_atomic(path, std::string("second, longer\0with nul", 23));
  EXPECT_EQ(read_bytes(path), std::string("second, longer\0with nul", 23));
  EXPECT_EQ(read_file(path), std::string("second, longer\0with nul", 23));
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

// Two `tokenizer train` runs to one new --out both said they wrote it; the second one to finish
// replaced the first's. A new file is written only where nothing is yet.
TEST(AtomicFile, ANewFileNeverReplacesOneThatAppeared) {
  TempDir dir;
  const std::string path = dir.file("t.model");
  write_new_file_atomic(path, "first", "tokenizer train");
  EXPECT_EQ(read_bytes(path), "first");
  try {
    write_new_file_atomic(path, "second", "tokenizer train");
    ADD_FAILURE() << "a file that appeared was replaced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + " appeared while tokenizer train was writing it"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(read_bytes(path), "first");
  EXPECT_EQ(count_entries(dir.path()), 1u);  // no temporary left beside it
}

TEST(AtomicFile, StreamingWriter) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_file_atomic(path, [](std::FILE* f) {
    for (int i = 0; i < 1000; ++i) std::fputc('a' + i % 26, f);
  });
  const std::string got = read_bytes(path);
  ASSERT_EQ(got.size(), 1000u);
  EXPECT_EQ(got[27], 'b');
}

TEST(AtomicFile, MissingDirectoryThrows) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/x.txt");
  try {
    write_file_atomic(path, std::string("x"));
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
}

// A legal name of 250 bytes failed through its temporary sibling ("creating NAME.tmp... failed:
// File name too long"), which read as if the name itself were too long.
TEST(AtomicFile, ANameTooLongForItsTemporarySaysHowLongItMayBe) {
  TempDir dir;
  const std::string path = dir.file(std::string(250, 'b'));
  try {
    write_file_atomic(path, std::string("x"));
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("its name is 250 bytes, and the temporary file"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("choose a name of at most"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(write_file_atomic(dir.file(std::string(230, 'b')), std::string("x")));
}

TEST(AtomicFile, ShortWriteLeavesTargetIntactAndNoTemp) {
  TempDir dir;
  const std::string path = dir.file("target.bin");
  write_bytes(path, "old contents");
  {
    FileSizeLimit limit(4096);
    try {
      write_file_atomic(path, std::string(100000, 'z'));
      ADD_FAILURE() << "expected chainlm::Error";
    } catch (const Error& e) {
      // The OS reason of the failed write, not a generic one.
      EXPECT_NE(std::string(e.what()).find("write failed: File too large"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(read_bytes(path), "old contents");
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(AtomicFile, WriterExceptionLeavesTargetIntact) {
  TempDir dir;
  const std::string path = dir.file("target.bin");
  write_bytes(path, "old");
  EXPECT_THROW(write_file_atomic(path,
                                 [](std::FILE* f) {
                                   std::fputs("partial", f);
                                   throw std::runtime_error("boom");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_bytes(path), "old");
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(AtomicFile, ReadMissingFileNamesIt) {
  TempDir dir;
  const std::string path = dir.file("missing.txt");
  try {
    read_file(path);
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(fsync_directory(dir.file("missing_dir")), Error);
  EXPECT_NO_THROW(fsync_directory(dir.path().string()));
}

}  // namespace
}  // namespace chainlm
