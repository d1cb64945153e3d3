#include "core/wait_policy.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <string>

namespace chainlm {

void reexec_with_passive_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  ::unsetenv("OMP_WAIT_POLICY");  // exec failed: go on as we are, with the default policy
}

std::string omp_wait_policy() {
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) {
    std::string s(p);
    for (char& c : s) c = (char)std::tolower((unsigned char)c);
    if (s == "passive" || s == "active") return s;
  }
  if (const char* n = std::getenv("GOMP_SPINCOUNT")) return std::string("spin count ") + n;
  return "default";
}

}  // namespace chainlm
