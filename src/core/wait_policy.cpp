#include "core/wait_policy.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace chainlm {

namespace {

// OMP_WAIT_POLICY as libgomp reads it: "active" or "passive" in any case, else "" (libgomp
// warns and keeps its default, which spins).
std::string wait_policy_of(const char* p) {
  std::string s(p);
  for (char& c : s) c = (char)std::tolower((unsigned char)c);
  return s == "passive" || s == "active" ? s : std::string();
}

}  // namespace

void reexec_with_passive_wait(char** argv) {
  const char* given = std::getenv("OMP_WAIT_POLICY");
  if (std::getenv("GOMP_SPINCOUNT")) return;
  // An empty or invalid value is no choice: it was run with libgomp's spinning default, which a
  // busy core turns 40x slower (docs/training.md).
  if (given && !wait_policy_of(given).empty()) return;
  if (given)
    std::fprintf(stderr,
                 "warning: OMP_WAIT_POLICY='%s' is neither 'active' nor 'passive'; running "
                 "passive, chainlm's default\n",
                 given);
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
  if (const char* p = std::getenv("OMP_WAIT_POLICY"))
    if (std::string s = wait_policy_of(p); !s.empty()) return s;
  if (const char* n = std::getenv("GOMP_SPINCOUNT")) return std::string("spin count ") + n;
  return "default";
}

}  // namespace chainlm
