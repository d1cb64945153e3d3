#pragma once
// Runs the built `chainlm` binary from a test and captures exit code, stdout and stderr.
#include <sys/wait.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "io/test_temp_dir.h"

namespace chainlm::testing {

struct RunResult {
  int exit_code;
  std::string out, err;
};

// A whole shell command line (`env X= 'chainlm' ...`, `... >/dev/full`): its stderr is
// captured, its stdout goes where the command line sends it (else to a file, read back).
inline RunResult run_shell(const TempDir& dir, const std::string& command) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const bool own_stdout = command.find(" >") != std::string::npos;
  const std::string cmd = command + (own_stdout ? "" : " >'" + out + "'") + " 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_bytes(out), read_bytes(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

inline RunResult run_chainlm(const TempDir& dir, const std::string& args) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const std::string cmd =
      std::string("'") + CHAINLM_BINARY + "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_bytes(out), read_bytes(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// Sets (or, with nullopt, unsets) an environment variable for the scope of the test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value->c_str(), 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

inline std::string quote(const std::string& path) { return "'" + path + "'"; }

// Whether a command's output holds a message (the tests check messages by their words).
inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// s without trailing whitespace (a file's last newline, say).
inline std::string trimmed(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

}  // namespace chainlm::testing
