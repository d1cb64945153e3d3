#pragma once
// What a training run or an inference server will hold in memory, worked out from the config
// before anything large is allocated, so a run that cannot fit is refused up front with the
// estimate instead of dying to the OOM killer hours later (docs/reliability.md, "Memory").
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"

namespace chainlm {

struct MemoryEstimate {
  std::vector<std::pair<std::string, uint64_t>> parts;  // what, bytes
  uint64_t total() const;
  // "1.23 GiB (weights 114 MiB, gradients 114 MiB, ...)".
  std::string describe() const;
};

// Process overhead besides the model (libraries, OpenBLAS and OpenMP buffers, allocator). At
// 32 MiB training's peaks were 5.8-6.3 MiB above the estimate from the quickstart configs to
// ref30m (and 0.5 below it on a 2-layer dim-64 model): 40 keeps the estimate above them, so a
// run --memory-limit lets through fits (bench/RESULTS.md, "Memory under mpirun").
inline constexpr uint64_t kRuntimeOverheadBytes = 40ull << 20;

// One training process: weights, gradients, AdamW moments, the activation arena for a
// (micro_batch, seq_len) step, the head gradients of the extra weighted sub-models
// (weighted_submodels - 1 of them) and the runtime; with bf16, the bf16 copies of the weights
// and of the activations the GEMMs read (docs/precision.md).
MemoryEstimate training_memory(const ModelConfig& config, int micro_batch, int seq_len,
                               int weighted_submodels, bool bf16 = false);

// Throws chainlm::Error when `estimate` times `processes` (processes of the job sharing this
// machine) exceeds `limit`, or, with limit 0, the memory available now (core/memory.h) plus
// `held`, the part of the estimate this process has already allocated. The message gives the
// estimate, the budget and its source, and `advice` (what to change).
// `has_limit_option`: the command takes --memory-limit (the message advises it).
void check_memory_fits(const std::string& what, const MemoryEstimate& estimate, int processes,
                       uint64_t limit, const std::string& advice, uint64_t held = 0,
                       bool has_limit_option = true);

}  // namespace chainlm
