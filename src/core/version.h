#pragma once
// chainlm's version: `chainlm --version` prints it and every training run records it (with its
// GEMM libraries') in its log and checkpoints, for whoever reruns the run.

namespace chainlm {

inline constexpr const char* kChainlmVersion = "0.1.0";

}  // namespace chainlm
