// Process memory readings and byte sizes (core/memory.h).
#include "core/memory.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "address_space_limit.h"
#include "core/error.h"

namespace chainlm {
namespace {

TEST(ByteSize, ParsesUnitsAsPowersOf1024) {
  EXPECT_EQ(parse_byte_size("100", "x"), 100u);
  EXPECT_EQ(parse_byte_size("64K", "x"), 64u << 10);
  EXPECT_EQ(parse_byte_size("512M", "x"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("512MB", "x"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("2g", "x"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("1.5GiB", "x"), 3ull << 29);
  EXPECT_EQ(parse_byte_size("1T", "x"), 1ull << 40);
}

TEST(ByteSize, RejectsWhatIsNotASizeNamingTheOption) {
  // strtod's hexadecimal ("0x10M" was 16 MiB) and exponents ("1e3" 1000 bytes) are not sizes.
  for (const char* bad :
       {"", "abc", "10X", "-1G", "0", "1e30T", "G", "0x10M", "1e3", "1.2.3G", ".", "0.5"}) {
    try {
      parse_byte_size(bad, "--memory-limit");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--memory-limit"), std::string::npos) << e.what();
    }
  }
}

TEST(ByteSize, ASizePastSixteenExbibytesIsTooLarge) {
  try {
    parse_byte_size("99999999999999999999G", "--memory-limit");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'99999999999999999999G' is too large"), std::string::npos)
        << e.what();
  }
}

TEST(ByteSize, FormatsWithBinaryUnits) {
  EXPECT_EQ(format_bytes(900), "900 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(3.0 * (1 << 30)), "3.00 GiB");
}

TEST(ProcessMemory, PeakGrowsWhenMemoryIsTouchedAndStaysAfterItIsFreed) {
  const uint64_t before = peak_rss_bytes();
  const uint64_t rss_before = current_rss_bytes();
  ASSERT_GT(before, 0u);
  ASSERT_GT(rss_before, 0u);
  constexpr size_t kBytes = 256u << 20;  // more than this process has held so far
  {
    std::vector<char> block(kBytes);
    std::memset(block.data(), 1, block.size());  // touch every page
    EXPECT_GE(current_rss_bytes(), rss_before + kBytes * 9 / 10);
  }
  const uint64_t after = peak_rss_bytes();
  EXPECT_GE(after, rss_before + kBytes * 9 / 10);  // the peak remembers the freed block
  EXPECT_GE(peak_rss_bytes(), current_rss_bytes());
}

TEST(ProcessMemory, AvailableIsPositiveAndAtMostPhysicalMemory) {
  const AvailableMemory a = available_memory();
  EXPECT_GT(a.bytes, 0u);
  EXPECT_FALSE(a.source.empty());
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  ASSERT_TRUE(f >> key >> kb);
  ASSERT_EQ(key, "MemTotal:");
  EXPECT_LE(a.bytes, kb * 1024);
}

// Under `ulimit -v` the room is the limit less what the process maps already: a server under
// `ulimit -v 8000000` fit a 20 GiB estimate by MemAvailable, and every request failed. Checked in
// a child, whose limit ends with it: the room it reports (as its exit status, in 16 MiB units)
// is at most the 256 MiB it was given past its mapped size, and the source says why.
TEST(ProcessMemory, TheAddressSpaceLimitBoundsWhatIsAvailable) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!testing::limit_address_space_to_now_plus(256u << 20)) ::_exit(255);
    const AvailableMemory a = available_memory();
    if (a.source.find("ulimit -v") == std::string::npos) ::_exit(254);
    ::_exit((int)std::min<uint64_t>(a.bytes >> 24, 253));
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 255) << "the child could not set its limit";
  EXPECT_NE(WEXITSTATUS(status), 254) << "the limit was not what bounded the room";
  EXPECT_LE(WEXITSTATUS(status), 16) << "more than 256 MiB reported";
}

}  // namespace
}  // namespace chainlm
