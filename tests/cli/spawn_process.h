#pragma once
// Starting the chainlm binary as a child process a test can signal or kill, and collecting how
// it ended (crash safety, stop signals).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "io/test_temp_dir.h"

namespace chainlm::testing {

using Env = std::vector<std::pair<std::string, std::string>>;
using Args = std::vector<std::string>;

struct Outcome {
  int code = -1;    // exit code, -1 when a signal ended the process
  int signal = 0;   // the signal that ended it
  std::string out, err;
};

// Starts argv[0] with argv, plus `env`, stdout and stderr into the given files.
inline pid_t spawn(const Args& argv, const Env& env, const std::string& out, const std::string& err) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) ::_exit(126);
    ::dup2(o, 1);
    ::dup2(e, 2);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

inline Outcome finish(pid_t pid, const std::string& out, const std::string& err) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  Outcome r;
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_bytes(out);
  r.err = read_bytes(err);
  return r;
}

// Waits up to `seconds` for pid to end: its wait status, or -1 if it still ran (it is then
// killed and reaped, so that a failing test leaves nothing behind).
inline int wait_for_exit_or_kill(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

}  // namespace chainlm::testing
