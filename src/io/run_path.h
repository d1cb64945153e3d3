#pragma once
// A checkpoint named directly or through its training run's `latest` file: every command that
// takes --model (model/checkpoint.h) and a tokenizer directory (io/tokenizer.h) resolve it alike.
#include <string>

namespace chainlm {

// Accepts a checkpoint directory or a run directory (follows its `latest` file). Throws naming
// the path when it is neither, or when `latest` does not name a directory inside the run.
std::string resolve_checkpoint_dir(const std::string& path);

}  // namespace chainlm
