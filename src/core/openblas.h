#pragma once
// OpenBLAS, loaded (dlopen) when a GEMM, `info --system` or a benchmark first needs it rather
// than when chainlm starts. Its library constructor reserves 128 MiB of address space for each of
// its threads and, when an address-space limit (`ulimit -v`, a batch system's h_vmem) refuses
// that, retries for ever: chainlm hung before main, even for --version. Loaded on demand, it is
// never loaded where oneDNN runs every GEMM (AVX-512 CPUs), and where it is needed a limit too
// small for it is an error that says so.
#include <cblas.h>

#include <cstdint>
#include <string>

namespace chainlm {

struct OpenBlasApi {
  decltype(&cblas_sgemm) sgemm = nullptr;
  decltype(&openblas_get_config) get_config = nullptr;
  decltype(&openblas_get_corename) get_corename = nullptr;
  decltype(&openblas_set_num_threads) set_num_threads = nullptr;
};

// OpenBLAS, loaded on the first call (thread-safe), its thread count set to this thread's
// OpenMP count and its first GEMM run (which takes the last of its buffers). Throws chainlm::Error
// when it cannot be loaded, or when the address-space limit leaves less than its start reserves
// (openblas_start_bytes).
const OpenBlasApi& openblas();
bool openblas_loaded();

// The threads OpenBLAS starts with (OMP_NUM_THREADS, else the cores this process may use; at
// most those) and the address space it reserves as it loads and runs its first GEMM.
int openblas_start_threads();
uint64_t openblas_start_bytes();
// Why OpenBLAS would hang at its start with this address-space limit and this much already in
// use (bytes), or "" when it fits (limit 0: none).
std::string openblas_address_space_problem(uint64_t limit, uint64_t in_use);

}  // namespace chainlm
