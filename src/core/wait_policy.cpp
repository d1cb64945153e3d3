#include "core/wait_policy.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <string>

namespace chainlm {

void reexec_with_passive_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  // The binary's own path, not /proc/self/exe: the kernel names a process after the file it
  // executes, and a training shown as "exe" escaped pgrep/pkill/killall chainlm.
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0 && n < (ssize_t)sizeof self - 1) {
    self[n] = '\0';
    ::execv(self, argv);
  }
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
