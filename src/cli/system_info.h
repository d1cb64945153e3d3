#pragma once
// What `chainlm info --system` reports: the CPU and its vector features, the thread pool, and
// the kernels each library runs here (OpenBLAS's core, oneDNN's ISA) with the GEMM backend
// chosen for each precision.
#include <nlohmann/json.hpp>

namespace chainlm::cli {

nlohmann::json system_info();
void print_system_info(const nlohmann::json& info);

}  // namespace chainlm::cli
