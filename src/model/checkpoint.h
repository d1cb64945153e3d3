#pragma once
// Model checkpoints on disk (DESIGN.md, Formats): a directory holding config.json and
// model.safetensors (plus, for training runs, optimizer.safetensors, trainer_state.json
// and the tokenizer). A run directory holds checkpoint directories `step-NNNNNNNN` and a
// `latest` file naming the newest complete one.
#include <cstdint>
#include <memory>
#include <string>

#include "io/run_path.h"  // resolve_checkpoint_dir
#include "model/model.h"

namespace chainlm {

// Loads config.json and model.safetensors, checking every tensor's presence and shape.
// Also accepts a llama2.c checkpoint file (io/llama2c.h; a regular file that is one, or any
// regular file named *.bin, whose errors then come from read_llama2c), and a Hugging Face
// LLaMA directory (config.json naming a model_type or architectures; model/hf_llama_convert.h).
std::unique_ptr<Model> load_model(const std::string& checkpoint_dir);

// Throws, naming `weights` and the config's sizes, when `weight_bytes` bytes of tensor data
// cannot hold the parameters of config c even at 2 bytes each (F16/BF16; chainlm writes F32).
// Loaders call it before building the model, so a config claiming 10^12 parameters beside a
// small file is refused instead of allocated.
void check_weights_can_hold(const ModelConfig& c, uint64_t weight_bytes, const std::string& weights);

// Writes config.json and model.safetensors into dir (each atomically).
void save_model(const Model& model, const std::string& dir);
// The newest checkpoint of the same run, older than checkpoint_dir (a run's step-N), whose
// files a resume reads are whole (weights and moments pass their checksums, config and trainer
// state parse); "" when there is none (or checkpoint_dir is not a run's step).
std::string intact_earlier_checkpoint(const std::string& checkpoint_dir);
// The message of an error reading checkpoint_dir's files, followed by how to resume from the
// intact earlier checkpoint when there is one (and the message names none yet).
std::string with_intact_earlier(const std::string& message, const std::string& checkpoint_dir);

// Reads every tensor of `file` whose name is a model parameter into the model, requiring
// all parameters to be present with their exact shapes.
void load_model_weights(Model& model, const std::string& file);

}  // namespace chainlm
