#pragma once
// A checkpoint named directly or through its training run's `latest` file: every command that
// takes --model (model/checkpoint.h) and a tokenizer directory (io/tokenizer.h) resolve it alike.
#include <string>
#include <utility>
#include <vector>

namespace chainlm {

// The step of a checkpoint directory name "step-NNNNNNNN", -1 for any other name.
long checkpoint_step(const std::string& name);
// The checkpoint directories (step-NNNNNNNN) of a run, with their steps, oldest first; none when
// `run` cannot be read.
std::vector<std::pair<long, std::string>> run_checkpoints(const std::string& run);

// Accepts a checkpoint directory or a run directory (follows its `latest` file). Throws naming
// the path when it is neither, or when `latest` does not name a directory inside the run.
std::string resolve_checkpoint_dir(const std::string& path);

}  // namespace chainlm
