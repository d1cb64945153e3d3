#pragma once
// The checks `chainlm train` makes of its --out and --data before the first step: a checkpoint
// given where a run goes, and data that would fail the run at its first checkpoint.
#include <string>

namespace chainlm::cli {

// Fails: --out names a checkpoint instead of a run (its checkpoints would go inside it, where
// pruning later deletes them); a resume is pointed at the run when the checkpoint sits in one.
[[noreturn]] void refuse_checkpoint_as_run(const std::string& out, bool resume);

// Fails naming what is wrong when --data is not a finished data directory whose tokenizer can be
// read (every checkpoint carries it). A directory that does not exist is left to the trainer.
void require_data_tokenizer(const std::string& data_dir);

}  // namespace chainlm::cli
