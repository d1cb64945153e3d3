#pragma once
// Loading a model and its tokenizer from a --model/--tokenizer pair, shared by every
// command that runs a model.
#include <memory>
#include <string>

#include "core/precision.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace chainlm::cli {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when need_tokenizer was false and none found
};

// model_arg: a checkpoint or run directory, a llama2.c .bin file (which carries no tokenizer,
// so tokenizer_arg is then required when need_tokenizer is set), or a Hugging Face LLaMA
// directory (whose tokenizer.model is used when present). With bf16 the weights are kept in
// bf16 only (Model::use_bf16_weights): half the memory, bf16 GEMMs. An fp32 model's matrices go
// into panels (Model::use_fp32_panels) unless fp32_panels is false (a caller that copies,
// quantizes or converts the fp32 weights afterwards).
LoadedModel load_model_and_tokenizer(const std::string& model_arg, const std::string& tokenizer_arg,
                                     bool need_tokenizer = true,
                                     Precision precision = Precision::Fp32,
                                     bool fp32_panels = true);
// The tokenizer a model carries, as a spec for load_tokenizer: a chainlm checkpoint's (or run's
// latest checkpoint's), or a Hugging Face directory's tokenizer.model; "" when it carries none
// (a llama2.c .bin, a directory without one). expand and quantize store it beside their output.
std::string carried_tokenizer(const std::string& model_arg);
// A --tokenizer given for a model: refused when it has more tokens than the model's vocab_size
// (ids the model has no row for), or when the model carries a tokenizer of another vocabulary
// size (not the one it was trained with: eval reported ppl 2874 for 39 with such a one, and
// generate failed only at its first token); a carried tokenizer of the same size but another
// file (a tokenizer.json beside its tokenizer.model, say) is only warned of.
void check_tokenizer_for_model(const std::string& model_arg, const std::string& tokenizer_arg,
                               const Tokenizer& tokenizer, int model_vocab);
// The Jinja chat template a model carries, and the file it was read from: a directory's
// tokenizer_config.json "chat_template" (a string, or the "default" of a list), else its
// chat_template.jinja (where recent transformers save it); a GGUF file's
// tokenizer.chat_template. "" when it carries none. Throws on a tokenizer_config.json that is
// not JSON or whose chat_template is of another type (callers add what to do: serve names
// --chat-template).
struct CarriedChatTemplate {
  std::string jinja, source;
};
CarriedChatTemplate carried_chat_template(const std::string& model_arg);
// Help text of the inference commands' --precision.
inline constexpr const char* kInferencePrecisionHelp =
    "Weights and GEMM inputs: fp32, or bf16 (half the memory and bytes per token; fp32 sums)";

}  // namespace chainlm::cli
