#pragma once
// Karpathy's llama2.c files (docs/formats.md, "llama2.c checkpoints and tokenizers"):
//   - legacy model checkpoints (run.c's `Config` header + float32 weights), read into plain
//     arrays here; src/model/llama2c_import.h turns them into a chainlm Model;
//   - tokenizer.bin vocabularies, as a Tokenizer that encodes and decodes exactly as run.c.
// The io layer depends only on core, so nothing here knows about the model.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace chainlm {

// run.c's Config, with the sign trick of vocab_size decoded.
struct Llama2cHeader {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  bool shared_classifier = true;  // the file's vocab_size was positive: wcls = token embedding

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return dim / n_heads * n_kv_heads; }
  // Exact file size in bytes that this header implies (64-bit; valid headers only).
  int64_t file_bytes() const;
};

// All weights, row-major, in run.c's layout (L layers, D dim, KV = n_kv_heads * head_size,
// F hidden_dim, V vocab). Each matrix is (out, in): y = W x.
struct Llama2cWeights {
  Llama2cHeader h;
  std::vector<float> token_embedding;  // [V, D]
  std::vector<float> rms_att;          // [L, D]
  std::vector<float> wq;               // [L, D, D]
  std::vector<float> wk;               // [L, KV, D]
  std::vector<float> wv;               // [L, KV, D]
  std::vector<float> wo;               // [L, D, D]
  std::vector<float> rms_ffn;          // [L, D]
  std::vector<float> w1;               // [L, F, D]
  std::vector<float> w2;               // [L, D, F]
  std::vector<float> w3;               // [L, F, D]
  std::vector<float> rms_final;        // [D]
  std::vector<float> wcls;             // [V, D]; empty when h.shared_classifier
};

// Reads a legacy llama2.c checkpoint. The header is validated and the file size checked
// against it before anything is allocated; every failure is a chainlm::Error naming the file.
Llama2cWeights read_llama2c(const std::string& path);

// True for a regular file whose header is a plausible llama2.c header and whose size is
// exactly what that header implies. Never throws.
bool is_llama2c_checkpoint(const std::string& path);

// Writes w as a legacy llama2.c checkpoint (the RoPE tables run.c skips are written as
// zeros). Used by tests to build small checkpoints; also a way to hand weights to run.c.
void write_llama2c(const Llama2cWeights& w, const std::string& path);

// llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length,
// length bytes, up to the end of the file. Ids 1 and 2 are BOS and EOS; byte-fallback pieces
// "<0xXX>" are ids XX+3. encode() is run.c's encode without BOS/EOS; decode_token() is
// run.c's decode. kind() is "llama2c".
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path);

// True when path is a regular file that parses as a well-formed tokenizer.bin (every entry
// complete, lengths within max_token_length, finite scores, ending exactly at the end of the
// file). Never throws.
bool is_llama2c_tokenizer(const std::string& path);

}  // namespace chainlm
