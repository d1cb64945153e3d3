#pragma once
// chainlm Model <-> GGUF (io/gguf.h, docs/formats.md "GGUF"): the LLaMA architecture as
// llama.cpp names it (general.architecture "llama", token_embd, blk.N.attn_q, ..., output), with
// the tokenizer inside. Only a LLaMA can be written: a 1-chain model or the 1-chain sub-model
// (the same limit as the Hugging Face export, hf_llama_convert.h).
#include <memory>
#include <string>

#include "model/model.h"

namespace chainlm {

// The GGUF type of the exported weight matrices: "f32", "f16", "q8_0", "q4_0"; "" keeps the
// model's own (its quantization type, else f32).
struct GgufExportOptions {
  int chains = 1;
  std::string type;
  std::string tokenizer;  // a SentencePiece tokenizer spec to embed; "" writes "no_vocab"
  std::string name;       // general.name
  std::string chat_template;  // tokenizer.chat_template (Jinja), when the model carries one
};

struct GgufExportSummary {
  std::string file_type;     // what general.file_type says: "f32", "f16", "q8_0", "q4_0"
  int tensors = 0;
  int fallback_tensors = 0;  // matrices whose rows are not whole 32-blocks, kept in F16/F32
  bool copied_blocks = false;  // a quantized model's blocks went in as they are
  int fp32_tensors = 0;        // matrices a quantized model holds in fp32 (its tables), kept in F32
};

// Throws, naming what, when the sub-model cannot be exported (see hf_llama_config_of), or when
// the type would re-quantize a quantized model (q8_0 from q4_0 and the reverse).
void check_gguf_exportable(const Model& model, const GgufExportOptions& options);

// Writes sub-model options.chains as a GGUF file (atomically). Matrices of type q8_0/q4_0 use
// chainlm's quantization (kernels/quant.h; with q4_0 the embedding and head are Q8_0, as
// `chainlm quantize` keeps them); a quantized model's blocks are copied, not re-quantized. A
// matrix whose rows are not a whole number of 32-blocks, which GGUF cannot block-quantize, is
// written in F16 from an fp32 model and in F32 (the exact dequantized weights) from a quantized
// one. Norm gains are F32. llama3 RoPE scaling goes in as llama.cpp reads it, the tensor
// rope_freqs.weight of per-pair frequency divisors, with the parameters themselves in the
// metadata key chainlm.rope_scaling (a JSON string).
GgufExportSummary export_gguf(const Model& model, const GgufExportOptions& options, const std::string& path);

// Reads a LLaMA GGUF: F32, F16 and BF16 tensors into fp32 weights; Q8_0 and Q4_0 matrices as
// quantized blocks (a quantized model: tensor by tensor, as stored). Refuses, naming it, another
// architecture, a tensor type chainlm does not run, RoPE scaling other than the llama3 scaling
// chainlm's export writes (rope_freqs.weight with the parameters in chainlm.rope_scaling), a
// missing or unexpected tensor.
std::unique_ptr<Model> load_gguf_model(const std::string& path);

}  // namespace chainlm
