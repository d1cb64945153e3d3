#include "kernels/gemm_backend.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/error.h"

namespace chainlm {

namespace {

// Without a choice in the environment: oneDNN where its kernels use AVX-512 or more (there
// they ran at about twice OpenBLAS's pinned Haswell kernels), OpenBLAS on AVX2, where both run
// AVX2 kernels and OpenBLAS measured level or ahead (docs/precision.md). A rule, not a timing
// race: the same machine always picks the same backend, so a resumed run stays bit-identical.
GemmBackend from_environment() {
  check_gemm_environment();
  const char* v = std::getenv("CHAINLM_GEMM");
  if (!v || !*v) {
    // oneDNN's ISA values are nested bit sets: every AVX-512-core-or-later ISA contains it.
    const int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
    const int avx512 = static_cast<int>(dnnl::cpu_isa::avx512_core);
    return (isa & avx512) == avx512 ? GemmBackend::OneDnn : GemmBackend::OpenBlas;
  }
  return std::strcmp(v, "onednn") == 0 ? GemmBackend::OneDnn : GemmBackend::OpenBlas;
}

std::atomic<int> g_override{-1};

}  // namespace

void check_gemm_environment() {
  const char* v = std::getenv("CHAINLM_GEMM");
  if (!v || !*v || std::strcmp(v, "onednn") == 0 || std::strcmp(v, "openblas") == 0) return;
  fail("CHAINLM_GEMM='", v, "': choose 'onednn' or 'openblas'");
}

GemmBackend gemm_backend() {
  const int o = g_override.load(std::memory_order_relaxed);
  if (o >= 0) return static_cast<GemmBackend>(o);
  static const GemmBackend chosen = from_environment();
  return chosen;
}

void set_gemm_backend(GemmBackend b) { g_override.store(static_cast<int>(b)); }

const char* gemm_backend_name(GemmBackend b) {
  return b == GemmBackend::OneDnn ? "onednn" : "openblas";
}

std::string onednn_isa() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41: return "sse41";
    case isa::avx: return "avx";
    case isa::avx2: return "avx2";
    case isa::avx2_vnni: return "avx2_vnni";
    case isa::avx512_mic: return "avx512_mic";
    case isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case isa::avx512_core: return "avx512_core";
    case isa::avx512_core_vnni: return "avx512_core_vnni";
    case isa::avx512_core_bf16: return "avx512_core_bf16";
    case isa::avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
  }
}

}  // namespace chainlm
