#pragma once
// Which library runs the engine's large GEMMs (gemm.h), chosen at run time. oneDNN's matmul
// dispatches to the best kernel the CPU has (AVX2, AVX-512, AVX512-BF16, AMX) whatever the
// environment pins OpenBLAS to (OPENBLAS_CORETYPE, which chainlm never overrides); OpenBLAS
// stays available to compare against and as a fallback. The few-row paths (decoding) use
// chainlm's own kernels with either backend (gemm.cpp).
#include <string>

namespace chainlm {

enum class GemmBackend { OneDnn, OpenBlas };

// The backend in use: CHAINLM_GEMM=onednn|openblas when set (anything else is refused with an
// error naming the choices), else oneDNN on CPUs where its kernels use AVX-512 or AMX and
// OpenBLAS on AVX2-only CPUs.
GemmBackend gemm_backend();
// Refuses a CHAINLM_GEMM that names no backend, as gemm_backend() would, but at once: a command
// calls it first, so that a mistyped value stops it before it writes anything (gemm_backend()
// itself runs at the first fp32 GEMM, or never in bf16 and decoding).
void check_gemm_environment();
// A warning (on stderr) when ONEDNN_MAX_CPU_ISA names no ISA oneDNN knows: oneDNN ignores such a
// value without a word, and a run meant to be held to AVX2 runs AVX-512.
void warn_of_unknown_onednn_isa();
// Overrides the choice for the rest of the process (tests, benchmarks).
void set_gemm_backend(GemmBackend b);
const char* gemm_backend_name(GemmBackend b);

// The instruction set oneDNN's kernels use on this CPU: "avx2", "avx512_core",
// "avx512_core_bf16", "avx512_core_amx", ... (ONEDNN_MAX_CPU_ISA lowers it).
std::string onednn_isa();
// What the backend in use runs: oneDNN's ISA, or OpenBLAS's core ("openblas haswell"). Sums
// round by the kernel, so a run resumed under another one is not bit-identical (the trainer
// records it beside the thread count).
std::string gemm_kernel_name();
// The GEMM libraries' versions as they report them ("oneDNN 2.7.3 (commit ...); OpenBLAS
// 0.3.21 DYNAMIC_ARCH ..."): a run records them beside the kernel, for whoever reruns it.
std::string gemm_library_versions();

}  // namespace chainlm
