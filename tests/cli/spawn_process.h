#pragma once
// Starting the chainlm binary as a child process a test can signal or kill, and collecting how
// it ended (crash safety, stop signals).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
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

}  // namespace chainlm::testing
