#include "core/threads.h"

#include <omp.h>

#include "core/error.h"

extern "C" void openblas_set_num_threads(int);

namespace chainlm {

void set_num_threads(int n) {
  CHAINLM_CHECK(n >= 0, "--threads ", n, ": give a positive count, or 0 for all cores");
  if (n == 0) return;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void set_num_threads_of_this_thread(int n) {
  if (n > 0) omp_set_num_threads(n);
}

}  // namespace chainlm
