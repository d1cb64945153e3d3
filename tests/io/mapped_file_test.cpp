// Memory maps of whole files (io/mapped_file.h): contents, empty files, and a map refused for
// want of address space named as such.
#include "io/mapped_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "../core/address_space_limit.h"
#include "core/error.h"
#include "test_temp_dir.h"

namespace chainlm {
namespace {

using testing::TempDir;

TEST(MappedFile, ViewsTheWholeFileAndAnEmptyOne) {
  TempDir dir;
  testing::write_bytes(dir.file("a"), "hello");
  testing::write_bytes(dir.file("empty"), "");
  const MappedFile a(dir.file("a"), "test file");
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(std::string((const char*)a.data(), a.size()), "hello");
  const MappedFile empty(dir.file("empty"), "test file");
  EXPECT_EQ(empty.size(), 0u);
}

TEST(MappedFile, AMissingFileIsNamedWithItsKind) {
  TempDir dir;
  try {
    MappedFile m(dir.file("nope"), "token shard");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open token shard"), std::string::npos) << e.what();
  }
}

// Under `ulimit -v` a model's weights failed with "cannot mmap PATH: Cannot allocate memory",
// which neither named the limit nor said the machine had memory to spare.
TEST(MappedFile, AMapBeyondTheAddressSpaceLimitNamesTheLimit) {
  TempDir dir;
  const std::string path = dir.file("big.safetensors");
  {
    const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 512l << 20), 0);  // sparse: no disk is used
    ::close(fd);
  }
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    if (!testing::limit_address_space_to_now_plus(64u << 20)) ::_exit(255);
    std::string message = "mapped";
    try {
      MappedFile m(path, "weights file");
    } catch (const Error& e) {
      message = e.what();
    }
    const ssize_t n = ::write(pipe_fds[1], message.data(), message.size());
    ::_exit(n == (ssize_t)message.size() ? 0 : 254);
  }
  ::close(pipe_fds[1]);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) message.append(buf, (size_t)n);
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the child could not set its limit or report";
  EXPECT_NE(message.find("cannot map weights file " + path + " (512.00 MiB)"), std::string::npos)
      << message;
  EXPECT_NE(message.find("ulimit -v"), std::string::npos) << message;
}

}  // namespace
}  // namespace chainlm
