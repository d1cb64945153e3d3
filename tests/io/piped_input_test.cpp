// A pipe, a FIFO or /dev/stdin is read once, whole (io/decompressed_file.h): its first bytes,
// read to tell how it is compressed, used to be gone from the second open that read the content
// (a user trial's `cat corpus | chainlm prepare --input /dev/stdin` lost its first 8 KiB without
// a word, and a FIFO given as --input hung).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "io/decompressed_file.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;

const std::string kFixtures = std::string(CHAINLM_SOURCE_DIR) + "/tests/io/data/compressed/";

// read_decompressed(fifo) while another thread writes `bytes` into it.
DecompressedFile read_through_fifo(const std::string& fifo, const std::string& bytes) {
  ::signal(SIGPIPE, SIG_IGN);  // a reader that closed early fails the write, not the test
  std::thread writer([&] {
    const int fd = ::open(fifo.c_str(), O_WRONLY);
    if (fd < 0) return;
    for (size_t at = 0; at < bytes.size();) {
      const ssize_t n = ::write(fd, bytes.data() + at, bytes.size() - at);
      if (n <= 0) break;
      at += (size_t)n;
    }
    ::close(fd);
  });
  DecompressedFile f;
  try {
    f = read_decompressed(fifo);
  } catch (...) {
    writer.join();
    throw;
  }
  writer.join();
  return f;
}

TEST(PipedInput, AFifoIsReadWholeAndDecompressedAsItsFile) {
  TempDir dir;
  const std::string plain = read_bytes(kFixtures + "poem.txt");
  ASSERT_GT(plain.size(), 8u);
  int n = 0;
  for (const auto& [suffix, name] : std::vector<std::pair<std::string, std::string>>{
           {"", "none"}, {".gz", "gzip"}, {".xz", "xz"}, {".zst", "zstd"}, {".bz2", "bzip2"}}) {
    const std::string fifo = dir.file("fifo" + std::to_string(n++));
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const DecompressedFile f = read_through_fifo(fifo, read_bytes(kFixtures + "poem.txt" + suffix));
    EXPECT_EQ(f.compression, name) << suffix;
    EXPECT_EQ(f.bytes, plain) << suffix;
  }
  // An empty stream is an empty file.
  const std::string empty = dir.file("empty");
  ASSERT_EQ(::mkfifo(empty.c_str(), 0600), 0);
  EXPECT_EQ(read_through_fifo(empty, "").bytes, "");
}

}  // namespace
}  // namespace chainlm
