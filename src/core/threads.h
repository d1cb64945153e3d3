#pragma once
// One thread pool: OpenMP. OpenBLAS is the Debian OpenMP build, so sgemm runs on the
// same pool and the two never oversubscribe the cores.
namespace chainlm {

// Elementwise work (in floats) below which a kernel runs on one thread: opening a parallel
// region costs microseconds, more than a decode step's single row of work.
constexpr long kParallelMinWork = 1L << 15;

// Sets the thread count for OpenMP regions and for OpenBLAS. n <= 0 keeps the default.
void set_num_threads(int n);
int num_threads();

// Sets the OpenMP thread count for the parallel regions the calling thread starts only (an
// OpenMP ICV of that thread); other threads keep theirs. A server computing several sessions on
// their own threads gives each its share of the cores this way. n <= 0 keeps the default.
void set_num_threads_of_this_thread(int n);

}  // namespace chainlm
