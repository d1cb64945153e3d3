#include "core/threads.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "core/error.h"
#include "core/openblas.h"

namespace chainlm {

void set_num_threads(int n) {
  CHAINLM_CHECK(n >= 0, "--threads ", n, ": give a positive count, or 0 for all cores");
  // 100,000 threads crashed (SIGSEGV) or aborted in libgomp's thread creation; no machine has
  // cores for more than this.
  CHAINLM_CHECK(n <= kMaxThreads, "--threads ", n, ": at most ", kMaxThreads, " (this machine has ",
                cores_available(), " cores for this process)");
  if (n == 0) return;
  // OpenBLAS's own call sets OpenMP's count too, capped at its build's 64: ours goes second, so
  // --threads 100 means 100 here as it does in serve (train and bench said 64).
  // (Not loaded yet: it takes OpenMP's count when it loads, core/openblas.h.)
  if (openblas_loaded()) openblas().set_num_threads(n);
  omp_set_num_threads(n);
}

long omp_num_threads_from_environment() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (!env) return 0;
  // OpenMP's form: a count, or counts per nesting level ("4,2"); chainlm runs the first.
  std::string first(env);
  first = first.substr(0, first.find(','));
  const size_t b = first.find_first_not_of(" \t"), e = first.find_last_not_of(" \t");
  first = b == std::string::npos ? "" : first.substr(b, e - b + 1);
  // At most 9 digits: libgomp read 99999999999 and ran out of memory creating the threads, and
  // 4294967297 as 1 (info --system printed 1215752191).
  const bool digits = !first.empty() && first.size() <= 9 &&
                      first.find_first_not_of("0123456789") == std::string::npos;
  return digits ? std::stol(first) : 0;
}

void check_omp_num_threads_environment(bool has_threads_option) {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (!env || !*env) return;
  // Refused as --threads is when it is no count chainlm runs.
  const long n = omp_num_threads_from_environment();
  CHAINLM_CHECK(n >= 1 && n <= kMaxThreads, "OMP_NUM_THREADS='", env,
                "' is not a thread count from 1 to ", kMaxThreads, " (this machine has ",
                cores_available(), " cores for this process); fix or unset it",
                has_threads_option ? ", or pass --threads" : "");
}

int num_threads() { return omp_get_max_threads(); }

int cores_available() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return (int)std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
}

void set_num_threads_of_this_thread(int n) {
  if (n > 0) omp_set_num_threads(n);
}

void run_on_own_thread(const std::function<void()>& f) {
  std::exception_ptr error;
  const int threads = omp_get_max_threads();  // a new thread would start from the process default
  std::thread([&] {
    omp_set_num_threads(threads);
    try {
      f();
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
}

}  // namespace chainlm
