#include "core/openblas.h"

#include <dlfcn.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "core/error.h"
#include "core/memory.h"
#include "core/threads.h"

namespace chainlm {

namespace {

OpenBlasApi g_api;
std::once_flag g_once;
std::atomic<bool> g_loaded{false};

template <class F>
F symbol(void* lib, const char* name) {
  void* p = ::dlsym(lib, name);
  CHAINLM_CHECK(p, "OpenBLAS (", CHAINLM_OPENBLAS_LIBRARY, ") has no ", name);
  return reinterpret_cast<F>(p);
}

void load() {
  rlimit as{};
  if (::getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
    const std::string problem = openblas_address_space_problem(as.rlim_cur, address_space_bytes());
    CHAINLM_CHECK(problem.empty(), problem);
  }
  // The library the build linked against (Debian's OpenMP variant), else the system's choice.
  void* lib = ::dlopen(CHAINLM_OPENBLAS_LIBRARY, RTLD_NOW | RTLD_GLOBAL);
  if (!lib) lib = ::dlopen("libopenblas.so.0", RTLD_NOW | RTLD_GLOBAL);
  CHAINLM_CHECK(
      lib, "cannot load OpenBLAS (", CHAINLM_OPENBLAS_LIBRARY, "): ", ::dlerror(),
      "; install libopenblas0-openmp (scripts/setup.sh does), or set CHAINLM_GEMM=onednn");
  g_api.sgemm = symbol<decltype(g_api.sgemm)>(lib, "cblas_sgemm");
  g_api.get_config = symbol<decltype(g_api.get_config)>(lib, "openblas_get_config");
  g_api.get_corename = symbol<decltype(g_api.get_corename)>(lib, "openblas_get_corename");
  g_api.set_num_threads = symbol<decltype(g_api.set_num_threads)>(lib, "openblas_set_num_threads");
  // chainlm's count, which set_num_threads gave OpenMP before OpenBLAS was here. OpenBLAS's call
  // sets OpenMP's count too, capped at its build's 64: ours goes second (as set_num_threads does).
  const int n = omp_get_max_threads();
  g_api.set_num_threads(n);
  omp_set_num_threads(n);
  // The first GEMM takes its buffer now, while the room checked above is still there: taken
  // later, after the model's weights, it could find none and loop.
  const float one = 1.0f;
  float out = 0.0f;
  g_api.sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.0f, &one, 1, &one, 1, 0.0f,
              &out, 1);
  g_loaded = true;
}

}  // namespace

int openblas_start_threads() {
  // As Debian's OpenMP build counts them (measured: it follows OMP_NUM_THREADS, not
  // OPENBLAS_NUM_THREADS nor a count set in the process before it loads), at most the cores.
  const int cores = cores_available();
  const long n = omp_num_threads_from_environment();
  return n > 0 ? (int)std::min<long>(n, cores) : cores;
}

uint64_t openblas_start_bytes() {
  // Measured on Debian's 0.3.21 (the smallest `ulimit -v` under which it loads, 2 cores): a
  // buffer of 128 MiB + 4 KiB for each thread as it loads, one more at its first GEMM (which
  // loops for ever too when it cannot have it), and ~45 MiB for the library and a small process.
  constexpr uint64_t kBuffer = (128ull << 20) + 4096, kRest = 48ull << 20;
  return kBuffer * (uint64_t)(openblas_start_threads() + 1) + kRest;
}

std::string openblas_address_space_problem(uint64_t limit, uint64_t in_use) {
  const uint64_t need = openblas_start_bytes();
  if (limit == 0 || in_use + need <= limit) return "";
  return cat("cannot start OpenBLAS: it reserves ", format_bytes((double)need),
             " of address space as it loads (", openblas_start_threads(),
             " threads of 128 MiB) and hangs when it cannot, and the address-space limit "
             "(ulimit -v) is ",
             format_bytes((double)limit), " with ", format_bytes((double)in_use),
             " in use. Raise the limit (ulimit -v ", ((in_use + need) >> 10) + 1,
             " or more), start fewer threads (OMP_NUM_THREADS=1), or run the GEMMs on oneDNN "
             "(CHAINLM_GEMM=onednn)");
}

const OpenBlasApi& openblas() {
  std::call_once(g_once, load);  // a throw leaves it to be tried again
  return g_api;
}

bool openblas_loaded() {
  return g_loaded;
}

}  // namespace chainlm
