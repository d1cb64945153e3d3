#pragma once
// For a forked test child: limits its address space (RLIMIT_AS, `ulimit -v`) to what it maps
// now plus `room` bytes. False when the mapped size cannot be read or the limit cannot be set.
#include <sys/resource.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace chainlm::testing {

inline bool limit_address_space_to_now_plus(uint64_t room) {
  std::ifstream f("/proc/self/status");
  std::string line;
  uint64_t mapped = 0;
  while (std::getline(f, line))
    if (line.rfind("VmSize:", 0) == 0) mapped = std::strtoull(line.c_str() + 7, nullptr, 10) * 1024;
  rlimit as{mapped + room, mapped + room};
  return mapped > 0 && ::setrlimit(RLIMIT_AS, &as) == 0;
}

}  // namespace chainlm::testing
