#include "kernels/gemm_backend.h"

#include <strings.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/error.h"
#include "core/openblas.h"

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

void warn_of_unknown_onednn_isa() {
  const char* v = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (!v || !*v) return;
  // The names the oneDNN chainlm is built with reads (case-insensitive): its cpu_isa values
  // (dnnl.hpp of oneDNN 2.6; newer releases add more, which this one would ignore).
  static const char* const known[] = {"ALL",
                                      "SSE41",
                                      "AVX",
                                      "AVX2",
                                      "AVX2_VNNI",
                                      "AVX512_MIC",
                                      "AVX512_MIC_4OPS",
                                      "AVX512_CORE",
                                      "AVX512_CORE_VNNI",
                                      "AVX512_CORE_BF16",
                                      "AVX512_CORE_AMX"};
  for (const char* k : known)
    if (strcasecmp(v, k) == 0) return;
  std::fprintf(
      stderr,
      "warning: ONEDNN_MAX_CPU_ISA='%s' is not an instruction set oneDNN knows (SSE41, AVX2, "
      "AVX512_CORE, AVX512_CORE_BF16, ...), so oneDNN ignores it and uses all this CPU has\n",
      v);
}

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

std::string gemm_library_versions() {
  const dnnl_version_t* v = dnnl_version();
  // OpenBLAS is loaded only where it runs GEMMs (core/openblas.h): not loaded for this.
  const bool blas = gemm_backend() == GemmBackend::OpenBlas || openblas_loaded();
  const char* config = blas ? openblas().get_config() : nullptr;
  return std::string("oneDNN ") + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) +
         (v->hash && std::strcmp(v->hash, "N/A") ? std::string(" (commit ") + v->hash + ")"
                                                 : std::string()) +
         "; " +
         (config ? config
          : blas ? "OpenBLAS"
                 : "OpenBLAS not loaded");
}

std::string gemm_kernel_name() {
  if (gemm_backend() == GemmBackend::OneDnn) return "onednn " + onednn_isa();
  const char* core = openblas().get_corename();
  return std::string("openblas ") + (core ? core : "unknown");
}

}  // namespace chainlm
