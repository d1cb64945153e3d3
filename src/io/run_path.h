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

// Whether dir holds a model checkpoint: config.json and model.safetensors.
bool is_checkpoint_dir(const std::string& dir);

// What a directory holds, told by the files that mark each kind: a training run (`latest`,
// `metrics.jsonl` or a step-NNNNNNNN checkpoint), a
// model checkpoint (config.json and model.safetensors), a prepared data directory (train.bin and
// val.bin), in that order; kOther for anything else. Commands name the kind given where another
// was wanted (a run as --data, a data directory as --model, a checkpoint as prepare's --out).
enum class DirectoryKind { kRun, kCheckpoint, kData, kOther };
DirectoryKind directory_kind(const std::string& dir);
// "training run", "model checkpoint", "data directory", "directory".
const char* directory_kind_name(DirectoryKind kind);

// For a new run's --out: "" when `dir` does not exist, is empty, or is a run; else a note that
// it holds other entries (naming up to three), beside which a run's files would go (`--out .`
// in a project directory, `--out ~`).
std::string other_entries_note(const std::string& dir);

// The checkpoint name `run/latest` holds, trimmed of the whitespace around it (as an editor
// leaves it); throws naming the file when it cannot be read.
std::string read_latest_name(const std::string& run);

// Accepts a checkpoint directory or a run directory (follows its `latest` file). Throws naming
// the path when it is neither, or when `latest` does not name a directory inside the run.
std::string resolve_checkpoint_dir(const std::string& path);

}  // namespace chainlm
