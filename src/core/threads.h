#pragma once
// One thread pool: OpenMP. OpenBLAS is the Debian OpenMP build, so sgemm runs on the
// same pool and the two never oversubscribe the cores.
#include <omp.h>

namespace chainlm {

// Elementwise work (in floats) below which a kernel runs on one thread: opening a parallel
// region costs microseconds, more than a decode step's single row of work.
constexpr long kParallelMinWork = 1L << 15;

// Runs f(n0, n1) over [0, N) cut into equal ranges, one per thread, or as f(0, N) on the calling
// thread when `work` (in floats) is below kParallelMinWork (the few-row GEMM kernels).
template <typename F>
void for_column_ranges(int N, long work, F&& f) {
  const int threads = work >= kParallelMinWork ? omp_get_max_threads() : 1;
  if (threads <= 1) {
    f(0, N);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    f((int)((long)N * t / nt), (int)((long)N * (t + 1) / nt));
  }
}

// Sets the thread count for OpenMP regions and for OpenBLAS. 0 keeps the default; a negative
// count is an error naming --threads.
void set_num_threads(int n);
int num_threads();

// Sets the OpenMP thread count for the parallel regions the calling thread starts only (an
// OpenMP ICV of that thread); other threads keep theirs. A server computing several sessions on
// their own threads gives each its share of the cores this way. n <= 0 keeps the default.
void set_num_threads_of_this_thread(int n);

}  // namespace chainlm
