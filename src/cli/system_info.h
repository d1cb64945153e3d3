#pragma once
// What `chainlm info --system` reports: the CPU and its vector features, the thread pool, and
// the kernels each library runs here (OpenBLAS's core, oneDNN's ISA) with the GEMM backend
// chosen for each precision.
#include <nlohmann/json.hpp>
#include <string>

namespace chainlm::cli {

nlohmann::json system_info();
void print_system_info(const nlohmann::json& info);
// How a bf16 training run's GEMMs run here, for train's start-up lines: on bf16 instructions,
// or on the fp32 kernels (no bf16 instructions, or a bf16 dot product slower than the FMA).
std::string bf16_gemm_note();

}  // namespace chainlm::cli
