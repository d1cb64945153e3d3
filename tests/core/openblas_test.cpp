// OpenBLAS loads when first needed (core/openblas.h): under an address-space limit too small for
// what its start reserves it is refused with the way out, instead of the start looping for ever
// (chainlm hung before main, even for --version); under one that fits it loads and multiplies.
// Each case runs in a forked child, whose limit and loaded library end with it.
#include "core/openblas.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "address_space_limit.h"
#include "core/error.h"
#include "core/threads.h"

namespace chainlm {
namespace {

// Runs `child` in a forked process and returns its exit status (-1: it did not exit).
template <class F>
int in_child(F child) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(OpenBlas, TheThreadsItStartsWithAndTheSpaceTheyReserve) {
  const int cores = cores_available();
  const char* was = std::getenv("OMP_NUM_THREADS");
  const std::string saved = was ? was : "";
  ::setenv("OMP_NUM_THREADS", "1", 1);
  EXPECT_EQ(openblas_start_threads(), 1);
  EXPECT_EQ(openblas_start_bytes(), 2 * ((128ull << 20) + 4096) + (48ull << 20));
  ::setenv("OMP_NUM_THREADS", "100000,2", 1);  // at most the cores; the first level's count
  EXPECT_EQ(openblas_start_threads(), cores);
  ::unsetenv("OMP_NUM_THREADS");
  EXPECT_EQ(openblas_start_threads(), cores);
  if (was) ::setenv("OMP_NUM_THREADS", saved.c_str(), 1);

  EXPECT_EQ(openblas_address_space_problem(0, 1ull << 30), "");  // no limit
  const uint64_t need = openblas_start_bytes(), in_use = 100ull << 20;
  EXPECT_EQ(openblas_address_space_problem(in_use + need, in_use), "");
  const std::string problem = openblas_address_space_problem(in_use + need - 1, in_use);
  EXPECT_NE(problem.find("cannot start OpenBLAS"), std::string::npos) << problem;
  EXPECT_NE(problem.find("ulimit -v " + std::to_string(((in_use + need) >> 10) + 1)),
            std::string::npos)
      << problem;
  EXPECT_NE(problem.find("CHAINLM_GEMM=onednn"), std::string::npos) << problem;
}

TEST(OpenBlas, ALimitTooSmallIsRefusedAndOneThatFitsLoadsIt) {
  // 64 MiB of room: OpenBLAS's start needs more (it looped there for ever).
  EXPECT_EQ(in_child([] {
              if (!testing::limit_address_space_to_now_plus(64u << 20)) return 255;
              try {
                openblas();
              } catch (const Error& e) {
                return std::string(e.what()).find("cannot start OpenBLAS") != std::string::npos ? 0
                                                                                                : 2;
              }
              return 1;  // loaded: the check did not refuse
            }),
            0);
  // Room for its start and a little more: it loads, and multiplies.
  EXPECT_EQ(in_child([] {
              if (!testing::limit_address_space_to_now_plus(openblas_start_bytes() + (32u << 20)))
                return 255;
              const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
              float c[4] = {};
              openblas().sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1.0f, a, 2, b, 2,
                               0.0f, c, 2);
              return openblas_loaded() && c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50 ? 0
                                                                                               : 3;
            }),
            0);
}

}  // namespace
}  // namespace chainlm
