#include "core/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace chainlm {

uint64_t peak_rss_bytes() {
  struct rusage ru {};
  const uint64_t peak = getrusage(RUSAGE_SELF, &ru) == 0 ? static_cast<uint64_t>(ru.ru_maxrss) * 1024 : 0;
  // The kernel's per-thread RSS counters reach the high-water mark lazily: never report a
  // peak below what /proc says the process holds now.
  return std::max(peak, current_rss_bytes());
}

uint64_t current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

namespace {

// A cgroup file holding one number; 0 when absent, "max" or unlimited (v1 writes ~2^63).
uint64_t read_cgroup_value(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return 0;
  try {
    const uint64_t v = std::stoull(s);
    return v >= (uint64_t{1} << 62) ? 0 : v;
  } catch (...) {
    return 0;
  }
}

struct CgroupFiles {
  std::string limit, usage;
};

// The memory limit and usage files of this process's cgroup: v2 ("0::/path") or v1
// ("N:memory:/path"; inside a container the namespaced root directory holds them).
std::vector<CgroupFiles> cgroup_files() {
  std::vector<CgroupFiles> out;
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("0::", 0) == 0) {
      const std::string dir = "/sys/fs/cgroup" + line.substr(3);
      out.push_back({dir + "/memory.max", dir + "/memory.current"});
    }
    const std::size_t m = line.find(":memory:");
    if (m != std::string::npos) {
      for (const std::string& dir : {"/sys/fs/cgroup/memory" + line.substr(m + 8), std::string("/sys/fs/cgroup/memory")})
        out.push_back({dir + "/memory.limit_in_bytes", dir + "/memory.usage_in_bytes"});
    }
  }
  return out;
}

}  // namespace

uint64_t address_space_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmSize:", 0) == 0) return std::strtoull(line.c_str() + 7, nullptr, 10) * 1024;
  return 0;
}

AvailableMemory available_memory() {
  AvailableMemory a;
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") {
      a.bytes = kb * 1024;
      a.source = "MemAvailable in /proc/meminfo";
      break;
    }
  }
  if (a.bytes == 0) {  // very old kernels: physical memory
    a.bytes = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    a.source = "physical memory";
  }
  for (const CgroupFiles& cg : cgroup_files()) {
    const uint64_t limit = read_cgroup_value(cg.limit);
    if (limit == 0) continue;
    const uint64_t used = read_cgroup_value(cg.usage);
    const uint64_t room = limit > used ? limit - used : 0;
    if (room < a.bytes) {
      a.bytes = room;
      a.source = cat("the cgroup limit in ", cg.limit);
    }
  }
  // `ulimit -v` (RLIMIT_AS) bounds the address space, of which this process holds some already
  // (libraries, thread stacks): a server started under `ulimit -v 8000000` fit an estimate of
  // 20 GiB by MemAvailable, and every request then failed with std::bad_alloc.
  rlimit as{};
  if (::getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
    const uint64_t mapped = address_space_bytes();
    const uint64_t room = as.rlim_cur > mapped ? as.rlim_cur - mapped : 0;
    if (room < a.bytes) {
      a.bytes = room;
      a.source = "the address-space limit (ulimit -v) less what the process maps already";
    }
  }
  return a;
}

std::string address_space_limit_note(uint64_t bytes) {
  rlimit as{};
  if (::getrlimit(RLIMIT_AS, &as) != 0 || as.rlim_cur == RLIM_INFINITY) return "";
  return cat("; the process's address space is limited to ", format_bytes((double)as.rlim_cur),
             " (ulimit -v), of which it maps ", format_bytes((double)address_space_bytes()),
             " already, and this needs ", format_bytes((double)bytes),
             " more: raise the limit (ulimit -v) or unset it");
}

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
  // Digits with at most one decimal point, then the unit: strtod's hexadecimal ("0x10M" was 16
  // MiB), exponents ("1e3" 1000 bytes) and an empty value (no limit) were taken before.
  const std::size_t pos = text.find_first_not_of("0123456789.");
  const std::string number = text.substr(0, pos);
  const bool decimal =
      !number.empty() && number != "." && std::count(number.begin(), number.end(), '.') <= 1;
  CHAINLM_CHECK(decimal, what, ": '", text, "' is not a size (examples: 512M, 1.5GiB, 2G)");
  const double value = std::stod(number);
  std::string unit = pos == std::string::npos ? std::string() : text.substr(pos);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  CHAINLM_CHECK(scale > 0, what, ": unknown unit '", unit, "' in '", text,
                "' (use B, K, M, G or T, optionally followed by iB/B)");
  const double bytes = value * scale;
  CHAINLM_CHECK(bytes < 1.8e19, what, ": '", text, "' is too large (at most 16 EiB)");
  CHAINLM_CHECK(bytes >= 1, what, ": '", text, "' must be a positive size");
  return static_cast<uint64_t>(bytes);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0) std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  else std::snprintf(buf, sizeof buf, "%.2f %s", bytes, units[u]);
  return buf;
}

}  // namespace chainlm
