#pragma once
// Text <-> token ids. Four implementations: a byte-level fallback that needs no file,
// SentencePiece models (the LLaMA family's tokenizer, also what `chainlm tokenizer train`
// produces), llama2.c tokenizer.bin files (io/llama2c.h) and Hugging Face tokenizer.json files
// (io/hf_tokenizer.h).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace chainlm {

class Tokenizer {
 public:
  virtual ~Tokenizer();
  // Never adds BOS or EOS; callers prepend bos_id() where a sequence starts.
  virtual std::vector<int> encode(const std::string& text) const = 0;
  // Text that continues an input begun before it (a chat turn after a special token): what
  // encode gives for it inside the whole input. Tokenizers that treat the input's start
  // apart (a Metaspace pre-tokenizer with prepend_scheme "first" puts "▁" there alone) do not
  // here; for the others it is encode.
  virtual std::vector<int> encode_continuation(const std::string& text) const {
    return encode(text);
  }
  // Skips BOS/EOS and other control tokens; throws on ids outside the vocabulary.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  // The text of one token for streaming output. As in llama2.c, SentencePiece's leading space
  // (the dummy prefix "▁") is dropped right after BOS, and byte tokens "<0xXX>" become the raw
  // byte (so a UTF-8 character split over several tokens is emitted piecewise).
  virtual std::string decode_token(int prev_id, int id) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  // Whether id ends a text. LLaMA-3 instruct models have several such tokens (<|eot_id|>,
  // <|end_of_text|>, <|eom_id|>); eos_id() is the first of them.
  virtual bool is_eos(int id) const { return id == eos_id(); }
  virtual std::vector<int> eos_ids() const { return {eos_id()}; }
  virtual std::string kind() const = 0;  // "byte", "sentencepiece", "llama2c" or "hf"
};

// ids 0..255 are the bytes themselves, 256 is BOS, 257 is EOS.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int kBos = 256, kEos = 257, kVocabSize = 258;
  std::vector<int> encode(const std::string& text) const override;
  std::string decode(const std::vector<int>& ids) const override;
  std::string decode_token(int prev_id, int id) const override;
  int vocab_size() const override { return kVocabSize; }
  int bos_id() const override { return kBos; }
  int eos_id() const override { return kEos; }
  std::string kind() const override { return "byte"; }
};

// spec is one of:
//   "byte"                      the ByteTokenizer
//   path to a SentencePiece .model file
//   path to a llama2.c tokenizer.bin (recognised by content, whatever its name)
//   path to a GGUF model that carries its SentencePiece model (kGgufSentencePieceKey)
//   a data or checkpoint directory (resolved with find_tokenizer_in_dir)
// Anything else is a chainlm::Error naming the path and listing the accepted forms.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);
// The SentencePiece branch of load_tokenizer, for callers that know the file's format.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path);
// The same from a model's bytes (a GGUF carries them); `where` names them in errors.
std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_bytes(const std::string& model_bytes,
                                                              const std::string& where);

// What a GGUF "llama" tokenizer records of a SentencePiece model (model/gguf_convert.h).
struct SentencePieceVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  // llama.cpp's token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
  std::vector<int32_t> types;
  int unk_id = 0, bos_id = 1, eos_id = 2;
  bool add_dummy_prefix = true;  // "a" is encoded as "▁a"
};
SentencePieceVocab sentencepiece_vocab(const std::string& model_bytes, const std::string& where);
// A chainlm GGUF (model/gguf_convert.h) carries the SentencePiece model's bytes under this key
// (a uint8 array) beside llama.cpp's tokenizer.ggml.* keys, so chainlm reads back exactly the
// tokenizer it wrote; a spec naming such a .gguf file loads that tokenizer.
inline constexpr const char* kGgufSentencePieceKey = "chainlm.tokenizer.sentencepiece_model";
// The bytes of the SentencePiece model a spec names: a .model file, a directory holding one, or
// a GGUF carrying one. Throws naming the spec when it names another kind of tokenizer.
std::string sentencepiece_model_bytes(const std::string& spec);
// When spec is (or its directory holds) a tokenizer.model: the tokenizer_config.json,
// generation_config.json, special_tokens_map.json and chat_template.jinja beside it, copied into
// dir (a HF export writing the .model itself keeps the chat template; save_tokenizer_to_dir
// does the same).
void copy_sentencepiece_companions(const std::string& spec, const std::string& dir);

// The one scheme for carrying a tokenizer inside a data or checkpoint directory (the first
// present wins):
//   DIR/tokenizer.model   a SentencePiece model (copied byte for byte)
//   DIR/tokenizer.bin     a llama2.c tokenizer (copied byte for byte; stored as tokenizer.model
//                         before 2026-12, which still loads: the content tells the format)
//   DIR/chainlm_tokenizer.json  {"kind": "byte"} for the byte tokenizer
//   DIR/tokenizer.json    a Hugging Face tokenizer, with tokenizer_config.json and
//                         generation_config.json beside it (BOS/EOS); chainlm's byte descriptor
//                         under this, its name before 2026-12, is read too
// find_tokenizer_in_dir returns the spec to pass to load_tokenizer, or throws when the
// directory holds none of these.
std::string find_tokenizer_in_dir(const std::string& dir);
// Whether dir holds one of the files above (valid or not: find_tokenizer_in_dir says).
bool dir_has_tokenizer(const std::string& dir);
// Every file a directory's tokenizer may take: the four above and the companions
// save_tokenizer_to_dir writes or copies beside them (special tokens, the chat template).
inline constexpr const char* kTokenizerDirFiles[] = {
    "tokenizer.model",         "tokenizer.bin",         "chainlm_tokenizer.json",
    "tokenizer.json",          "tokenizer_config.json", "generation_config.json",
    "special_tokens_map.json", "chat_template.jinja"};
// What identifies a tokenizer across copies: "byte", or the CRC-32 and size of its file
// ("crc32 1a2b3c4d, 254321 bytes"). Two specs with different fingerprints tokenize differently.
std::string tokenizer_fingerprint(const std::string& spec);
// Throws when the tokenizers of a data directory and of a model (its checkpoint directory, or a
// tokenizer spec) both exist and differ, naming both: tokens made by one mean nothing to a model
// trained with the other. `what` says what is being done ("train --resume", "eval ppl").
// A side without a tokenizer is not checked. `carried`, when model_dir is a --tokenizer the
// user gave: the tokenizer the model itself carries ("" for none), which when it is the data's
// makes the advice "drop --tokenizer".
void check_same_tokenizer(const std::string& data_dir, const std::string& model_dir,
                          const std::string& what, const std::string& carried = "");
// Writes the tokenizer named by spec into dir (atomically) in the scheme above.
void save_tokenizer_to_dir(const std::string& spec, const std::string& dir);

// How `chainlm tokenizer train` trains a SentencePiece model.
struct SentencePieceTrainOptions {
  int vocab_size = 0;                 // > 259: the 256 byte pieces and unk/bos/eos are always in
  uint64_t seed = 0;                  // the sentence sampler's seed
  double character_coverage = 0.9995; // characters covered by pieces; the rarest fall back to bytes
  bool verbose = false;               // SentencePiece's own log to stderr
};

// Trains a byte-fallback BPE SentencePiece model with the LLaMA id conventions (unk 0, bos 1,
// eos 2, no pad) on the non-blank lines of the documents (a line is SentencePiece's sentence).
// The same documents and options give the same model.
// SentencePiece's errors come back as chainlm messages naming chainlm's options; corpus_name
// says what the documents came from.
// Returns the .model file's bytes (trained in memory: no .vocab file beside it).
std::string train_sentencepiece_model(const std::vector<std::string>& documents,
                                      const std::string& corpus_name,
                                      const SentencePieceTrainOptions& options);

// The same on the lines of one UTF-8 text file, written to out_model_path (atomically).
void train_sentencepiece(const std::string& corpus_path, int vocab_size,
                         const std::string& out_model_path, uint64_t seed, bool verbose = false);

}  // namespace chainlm
