#pragma once
// Runs the built `chainlm` binary under mpirun (OpenMPI) from a test: N ranks on this machine,
// over shared memory, with a time limit so that a hang fails the test instead of the suite.
#include <sys/types.h>
#include <unistd.h>

#include <string>

#include "run_cli.h"

namespace chainlm::testing {

// The mpirun command line for n local ranks. Works in containers and as root: ranks may
// outnumber the cores (--oversubscribe; idle ranks then yield the CPU instead of spinning),
// are not pinned (the tests run beside others), talk over shared memory without the
// cross-memory-attach copy that containers often forbid, and root needs its own flag.
inline std::string mpirun_command(int ranks, int timeout_seconds = 120) {
  std::string cmd = "timeout -k 10 " + std::to_string(timeout_seconds) + " mpirun -np " +
                    std::to_string(ranks) +
                    " --oversubscribe --bind-to none --mca btl self,vader"
                    " --mca btl_vader_single_copy_mechanism none --mca mpi_yield_when_idle 1";
  if (::geteuid() == 0) cmd += " --allow-run-as-root";
  return cmd;
}

// `chainlm args` on `ranks` ranks; stdout and stderr hold every rank's output and mpirun's.
inline RunResult run_chainlm_mpi(const TempDir& dir, int ranks, const std::string& args,
                                 int timeout_seconds = 120) {
  const std::string out = dir.file("mpi_stdout.txt"), err = dir.file("mpi_stderr.txt");
  const std::string cmd = mpirun_command(ranks, timeout_seconds) + " '" + CHAINLM_BINARY + "' " +
                          args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_bytes(out), read_bytes(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace chainlm::testing
