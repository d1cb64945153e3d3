#pragma once
// One thread pool: OpenMP. OpenBLAS is the Debian OpenMP build, so sgemm runs on the
// same pool and the two never oversubscribe the cores.
#include <omp.h>

#include <functional>

namespace chainlm {

// Elementwise work (in floats) below which a kernel runs on one thread: opening a parallel
// region costs microseconds, more than a decode step's single row of work.
constexpr long kParallelMinWork = 1L << 15;

// Whether work of this size goes to the OpenMP threads. Work that stays on one thread must not
// even enter a parallel region: libgomp ends every region, `if (false)` and one-thread ones
// included, with a futex system call, and a decoded stories260K token entered 32 of them (a
// quarter of its time where system calls are slow, as in virtual machines).
// Inside an active parallel region (a kernel called per item of an outer loop already spread
// over the threads) it is never worth it: a nested region would get one thread and still cost.
inline bool worth_parallel(long work, long min_work = kParallelMinWork) {
  return work >= min_work && omp_get_max_threads() > 1 && !omp_in_parallel();
}

// body(i) for i in [0, n): static ranges over the threads when worth_parallel(work, min_work),
// else a plain loop on the calling thread.
template <typename F>
void parallel_for(long n, long work, F&& body, long min_work = kParallelMinWork) {
  if (!worth_parallel(work, min_work)) {
    for (long i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) body(i);
}

// Runs f(n0, n1) over [0, N) cut into equal ranges, one per thread, or as f(0, N) on the calling
// thread when `work` (in floats) is below min_work (the few-row GEMM kernels).
template <typename F>
void for_column_ranges(int N, long work, F&& f, long min_work = kParallelMinWork) {
  if (!worth_parallel(work, min_work)) {
    f(0, N);
    return;
  }
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    f((int)((long)N * t / nt), (int)((long)N * (t + 1) / nt));
  }
}

// The most threads chainlm runs: more than any machine's cores.
constexpr int kMaxThreads = 4096;

// Sets the thread count for OpenMP regions and for OpenBLAS. 0 keeps the default; a negative
// count, or one above kMaxThreads, is an error naming --threads.
void set_num_threads(int n);
// Throws naming OMP_NUM_THREADS when it is set to anything but a count from 1 to kMaxThreads
// (its first level, in OpenMP's "4,2" form); empty or unset is the default. The refusal offers
// --threads when the command has it (has_threads_option; info does not).
void check_omp_num_threads_environment(bool has_threads_option = true);
// OMP_NUM_THREADS's first level ("4,2": 4) as a count; 0 when unset, or not a count of at most
// 9 digits.
long omp_num_threads_from_environment();
int num_threads();
// Cores this process may run on (its affinity mask).
int cores_available();

// Sets the OpenMP thread count for the parallel regions the calling thread starts only (an
// OpenMP ICV of that thread); other threads keep theirs. A server computing several sessions on
// their own threads gives each its share of the cores this way. n <= 0 keeps the default.
void set_num_threads_of_this_thread(int n);

// Runs f on a thread of its own, with the calling thread's OpenMP thread count, and waits for
// it; an exception f throws is rethrown here.
// Setup work with parallel regions goes through it when the calling thread computes nothing
// afterwards (a server's main thread loading and converting the model): libgomp keeps the idle
// OpenMP threads of a thread's last region for as long as that thread lives, counts them all,
// and once they outnumber the CPUs, every barrier in the process spins ~100 times instead of
// ~300,000 before it sleeps on a futex. With one such idle pool beside the server's compute
// thread on 2 cores, a 15 us region took 28 us and a bf16 decoding step 1.4 ms instead of 0.8
// (bench/RESULTS.md). Here the pool ends with the thread.
void run_on_own_thread(const std::function<void()>& f);

}  // namespace chainlm
