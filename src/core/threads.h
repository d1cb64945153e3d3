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

}  // namespace chainlm
