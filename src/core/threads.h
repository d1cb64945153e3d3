#pragma once
// One thread pool: OpenMP. OpenBLAS is the Debian OpenMP build, so sgemm runs on the
// same pool and the two never oversubscribe the cores.
namespace chainlm {

// Sets the thread count for OpenMP regions and for OpenBLAS. n <= 0 keeps the default.
void set_num_threads(int n);
int num_threads();

}  // namespace chainlm
