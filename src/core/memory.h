#pragma once
// Process memory: what this process holds at most (peak resident set), what the machine can
// still give it, and byte sizes as people write and read them ("1.5GiB", "512M").
// Training and serving report the peak and refuse, up front, a run whose estimate
// (src/model/memory_estimate.h) does not fit what is available (docs/reliability.md).
#include <cstdint>
#include <string>

namespace chainlm {

// Peak resident set size of this process so far (getrusage ru_maxrss), in bytes.
uint64_t peak_rss_bytes();
// Resident set size now (/proc/self/statm), in bytes; 0 where unavailable.
uint64_t current_rss_bytes();

struct AvailableMemory {
  uint64_t bytes = 0;
  std::string source;  // where the figure came from, for messages
};
// Memory this process can still use: the kernel's MemAvailable, lowered to the room left in
// the process's cgroup (memory.max - memory.current) when that is smaller.
AvailableMemory available_memory();
// The process's address space now (VmSize in /proc/self/status), in bytes; 0 when unknown.
uint64_t address_space_bytes();
// Why an allocation or a map of `bytes` may have failed for want of address space: "" without
// a `ulimit -v` (RLIMIT_AS), else a sentence naming the limit and what the process maps already.
std::string address_space_limit_note(uint64_t bytes);

// "123", "64K", "1.5GiB", "2G", "512MB" (K/M/G/T = powers of 1024, with or without "iB"/"B").
// Throws chainlm::Error naming `what` on anything else.
uint64_t parse_byte_size(const std::string& text, const std::string& what);
// "1.23 GiB", "512.0 MiB", "900 B".
std::string format_bytes(double bytes);

}  // namespace chainlm
