#pragma once
// Hugging Face tokenizer.json files (the tokenizers library's format, which LLaMA-3, SmolLM,
// Mistral and most models published since 2024 ship instead of a SentencePiece model): BPE
// models with byte-level (GPT-2 / LLaMA-3) or SentencePiece-style ("▁", byte fallback)
// pre-tokenization, their added and special tokens, and BOS/EOS from the files beside them.
// Encoding and decoding match tokenizers 0.22 (tests/vectors/hf_tokenizers); docs/formats.md
// lists what is read and what is refused.
#include <memory>
#include <string>

#include "io/tokenizer.h"

namespace chainlm {

// The files of a Hugging Face tokenizer, as text. config and generation_config may be empty.
struct HfTokenizerFiles {
  std::string tokenizer_json;     // tokenizer.json
  std::string tokenizer_config;   // tokenizer_config.json: bos_token, eos_token
  std::string model_config;       // config.json: bos_token_id, eos_token_id (ints or lists)
  std::string generation_config;  // generation_config.json: the same keys
  std::string where;              // names the tokenizer.json in errors
};

// Reads path (a tokenizer.json) and the tokenizer_config.json, config.json and
// generation_config.json beside it when present.
HfTokenizerFiles read_hf_tokenizer_files(const std::string& path);

// Throws chainlm::Error naming the file and what is wrong (bad JSON, a model other than BPE,
// missing merges, an unsupported component, no BOS/EOS to be found).
std::unique_ptr<Tokenizer> hf_tokenizer_from_files(const HfTokenizerFiles& files);
// Files of the same contents (wherever they were read) share one build: loading is a second's
// work for a 128K-token tokenizer, and a command loads its tokenizer several times.
// hf_tokenizer_builds() counts the builds this process made (for tests).
size_t hf_tokenizer_builds();

// Writes tokenizer.json, tokenizer_config.json and generation_config.json (the BOS and EOS
// ids this tokenizer resolved, so a chainlm checkpoint keeps LLaMA-3's several EOS ids) into dir.
void save_hf_tokenizer_files(const HfTokenizerFiles& files, const std::string& dir);

}  // namespace chainlm
