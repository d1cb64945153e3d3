#include "core/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace chainlm::fault::detail {
namespace {

struct Trigger {
  std::string point;
  long at = 1;     // the hit that fires (1-based)
  int signal = 0;  // SIGKILL or SIGSTOP for crash points
  int error = 0;   // errno for write errors
  long hits = 0;
};

struct State {
  std::mutex mu;
  std::vector<Trigger> triggers;
  std::vector<std::pair<long, long>> nan_grad_steps;  // inclusive ranges
};

State& state() {
  static State s;
  return s;
}

[[noreturn]] void bad(const char* variable, const std::string& value, const char* why) {
  std::fprintf(stderr, "error: %s=\"%s\": %s\n", variable, value.c_str(), why);
  std::_Exit(2);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t begin = 0;
  for (;;) {
    const size_t end = s.find(sep, begin);
    parts.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

long positive(const char* variable, const std::string& value, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || n < 1)
    bad(variable, value, "counts and steps must be positive integers");
  return n;
}

int errno_named(const char* variable, const std::string& value, const std::string& name) {
  static const std::pair<const char*, int> known[] = {
      {"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EROFS", EROFS}, {"EACCES", EACCES}, {"EDQUOT", EDQUOT}};
  for (const auto& [n, e] : known)
    if (name == n) return e;
  bad(variable, value, "unknown errno name (ENOSPC, EIO, EROFS, EACCES, EDQUOT)");
}

// "point[:N][=ERRNO]" entries separated by commas.
void parse_triggers(const char* variable, int signal, bool with_errno, std::vector<Trigger>& out) {
  const char* env = std::getenv(variable);
  if (!env || !*env) return;
  const std::string value = env;
  for (std::string item : split(value, ',')) {
    Trigger t;
    t.signal = signal;
    if (with_errno) {
      const size_t eq = item.find('=');
      t.error = eq == std::string::npos ? ENOSPC : errno_named(variable, value, item.substr(eq + 1));
      if (eq != std::string::npos) item.resize(eq);
    }
    const size_t colon = item.find(':');
    if (colon != std::string::npos) {
      t.at = positive(variable, value, item.substr(colon + 1));
      item.resize(colon);
    }
    if (item.empty()) bad(variable, value, "empty point name");
    t.point = item;
    out.push_back(t);
  }
}

}  // namespace

bool read_environment() {
  State& s = state();
  parse_triggers("CHAINLM_CRASH_AT", SIGKILL, false, s.triggers);
  parse_triggers("CHAINLM_PAUSE_AT", SIGSTOP, false, s.triggers);
  parse_triggers("CHAINLM_WRITE_ERROR_AT", 0, true, s.triggers);
  const char* variable = "CHAINLM_FAULT_NAN_GRAD_AT_STEP";
  if (const char* env = std::getenv(variable); env && *env) {
    for (const std::string& item : split(env, ',')) {
      const size_t dash = item.find('-');
      const long a = positive(variable, env, item.substr(0, dash));
      const long b = dash == std::string::npos ? a : positive(variable, env, item.substr(dash + 1));
      s.nan_grad_steps.push_back({a, b});
    }
  }
  return !s.triggers.empty() || !s.nan_grad_steps.empty();
}

void crash_or_pause(const char* point) {
  int signal = 0;
  {
    std::lock_guard<std::mutex> lock(state().mu);
    for (Trigger& t : state().triggers)
      if (t.signal != 0 && t.point == point && ++t.hits == t.at) signal = t.signal;
  }
  if (signal == 0) return;
  std::fprintf(stderr, "fault injection: %s at %s\n", signal == SIGKILL ? "SIGKILL" : "SIGSTOP",
               point);
  std::fflush(stderr);
  ::raise(signal);
}

int write_error(const char* point) {
  std::lock_guard<std::mutex> lock(state().mu);
  for (Trigger& t : state().triggers)
    if (t.error != 0 && t.point == point && ++t.hits >= t.at) return t.error;
  return 0;
}

bool nan_grad_at_step(long step) {
  for (const auto& [a, b] : state().nan_grad_steps)
    if (step >= a && step <= b) return true;
  return false;
}

}  // namespace chainlm::fault::detail
