#include "io/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/hf_tokenizer.h"
#include "io/llama2c.h"
#include "io/run_path.h"
#include "io/safetensors.h"
#include "io/text_encoding.h"

namespace chainlm {
namespace fs = std::filesystem;

namespace {

constexpr const char* kAccepted =
    "accepted tokenizers: \"byte\", a SentencePiece .model file, a llama2.c tokenizer.bin, a Hugging "
    "Face tokenizer.json, a chainlm GGUF model, or a data/checkpoint/Hugging Face directory holding "
    "tokenizer.model, tokenizer.json or chainlm_tokenizer.json";
constexpr const char* kModelFile = "tokenizer.model";
// A llama2.c tokenizer.bin keeps its name (before 2026-12 it was stored as tokenizer.model, which
// said SentencePiece; such directories still load: the format is told by the content).
constexpr const char* kLlama2cFile = "tokenizer.bin";
// The byte tokenizer's descriptor. Before 2026-12 it was tokenizer.json, the name Hugging Face
// gives its tokenizers' files; that name is still read when it holds chainlm's descriptor.
constexpr const char* kDescriptorFile = "chainlm_tokenizer.json";
constexpr const char* kLegacyDescriptorFile = "tokenizer.json";

// The descriptor's JSON, or null when `path` holds something else (a Hugging Face file).
nlohmann::json read_descriptor(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_file(path.string()));
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), ": not valid JSON: ", e.what());
  }
}

bool is_byte_descriptor(const nlohmann::json& j) {
  return j.is_object() && j.size() == 1 && j.contains("kind") && j["kind"] == "byte";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The SentencePiece model a chainlm GGUF carries; throws when the file carries none.
std::string sentencepiece_model_in_gguf(const std::string& path) {
  const GgufReader gguf(path);
  if (!gguf.has(kGgufSentencePieceKey)) {
    const std::string model =
        gguf.has("tokenizer.ggml.model") ? gguf.get_string("tokenizer.ggml.model") : "(none)";
    fail(path, ": this GGUF carries no tokenizer chainlm reads (tokenizer.ggml.model is ", model,
         "; chainlm reads the SentencePiece model its own export embeds as ", kGgufSentencePieceKey,
         "): pass --tokenizer with the tokenizer the model was trained with");
  }
  const GgufValue& v = gguf.value(kGgufSentencePieceKey);
  CHAINLM_CHECK(v.type == GgufType::kArray && v.element_type == GgufType::kUint8, path, ": metadata '",
                kGgufSentencePieceKey, "' is not an array of uint8 (corrupt GGUF)");
  return v.bytes;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

std::string sentencepiece_model_bytes(const std::string& spec) {
  std::error_code ec;
  const std::string file = fs::is_directory(spec, ec) ? find_tokenizer_in_dir(spec) : spec;
  if (file != "byte" && is_gguf_file(file)) return sentencepiece_model_in_gguf(file);
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(file);
  CHAINLM_CHECK(tok->kind() == "sentencepiece", spec, " is ",
                tok->kind() == "byte" ? "the byte tokenizer" : "a " + tok->kind() + " tokenizer",
                ", not a SentencePiece model");
  return read_file(file);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  CHAINLM_CHECK(!spec.empty(), "empty tokenizer spec; ", kAccepted);
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  std::error_code ec;
  if (fs::is_directory(spec, ec)) return load_tokenizer(find_tokenizer_in_dir(spec));
  CHAINLM_CHECK(fs::exists(spec, ec), "tokenizer ", spec, " does not exist; ", kAccepted);
  if (is_gguf_file(spec)) return sentencepiece_tokenizer_from_bytes(sentencepiece_model_in_gguf(spec), spec);
  if (ends_with(spec, ".json")) {
    // chainlm's byte descriptor is a few bytes; anything else is read as Hugging Face's (whose
    // "model" may come after megabytes of added tokens), which names what is wrong with it.
    std::error_code size_ec;
    if (fs::file_size(spec, size_ec) < 256 && is_byte_descriptor(read_descriptor(spec)))
      return std::make_unique<ByteTokenizer>();
    return hf_tokenizer_from_files(read_hf_tokenizer_files(spec));
  }
  if (ends_with(spec, ".bin")) {
    if (is_llama2c_checkpoint(spec))
      fail(spec, ": this is a llama2.c model checkpoint, not a tokenizer (pass it as --model; ",
           kAccepted, ")");
    try {
      return load_llama2c_tokenizer(spec);
    } catch (const Error& e) {
      fail(e.what(), " (", kAccepted, ")");
    }
  }
  // tokenizer.bin has no magic: under another name (e.g. copied into a directory as
  // tokenizer.model) it is recognised by parsing whole, which a SentencePiece model never does.
  if (is_llama2c_tokenizer(spec)) return load_llama2c_tokenizer(spec);
  return load_sentencepiece_tokenizer(spec);
}

// A Hugging Face tokenizer.json beside a tokenizer.model that holds tokens the model lacks: a
// fine-tune's added <|im_start|>/<|im_end|> (its EOS, often), which transformers reads from the
// json. The SentencePiece model alone would spell them as text and never stop at that EOS.
bool json_adds_tokens_to(const fs::path& json_path, const fs::path& model) {
  std::error_code ec;
  if (!fs::is_regular_file(json_path, ec)) return false;
  const nlohmann::json j = nlohmann::json::parse(read_file(json_path.string()), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("model") || !j.contains("added_tokens") ||
      !j["added_tokens"].is_array())
    return false;
  long top = -1;
  for (const nlohmann::json& t : j["added_tokens"])
    if (t.is_object() && t.contains("id") && t["id"].is_number_integer())
      top = std::max(top, t["id"].get<long>());
  return top >= 0 && top >= (long)load_tokenizer(model.string())->vocab_size();
}

std::string find_tokenizer_in_dir(const std::string& dir) {
  std::error_code ec;
  const fs::path model = fs::path(dir) / kModelFile;
  if (fs::is_regular_file(model, ec)) {
    const fs::path json = fs::path(dir) / kLegacyDescriptorFile;
    return json_adds_tokens_to(json, model) ? json.string() : model.string();
  }
  const fs::path llama2c = fs::path(dir) / kLlama2cFile;
  if (fs::is_regular_file(llama2c, ec)) return llama2c.string();
  const fs::path descriptor = fs::path(dir) / kDescriptorFile;
  if (fs::is_regular_file(descriptor, ec)) {
    const nlohmann::json j = read_descriptor(descriptor);
    CHAINLM_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(), descriptor.string(),
                  ": not a chainlm tokenizer descriptor (expected {\"kind\": \"byte\"})");
    const std::string kind = j["kind"].get<std::string>();
    CHAINLM_CHECK(kind == "byte", descriptor.string(), ": unknown tokenizer kind '", kind,
                  "' (a SentencePiece tokenizer is stored as ", kModelFile, ")");
    return "byte";
  }
  const fs::path legacy = fs::path(dir) / kLegacyDescriptorFile;
  if (fs::is_regular_file(legacy, ec)) {
    const nlohmann::json j = read_descriptor(legacy);
    if (is_byte_descriptor(j)) return "byte";  // written by chainlm before the rename
    if (j.is_object() && j.contains("model")) return legacy.string();  // Hugging Face's
    fail(legacy.string(), ": neither a Hugging Face tokenizers file nor chainlm's byte tokenizer descriptor ",
         "(expected {\"kind\": \"byte\"})");
  }
  // A training run directory: the checkpoint its `latest` names carries the tokenizer (as
  // --model RUN follows `latest`).
  if (fs::is_regular_file(fs::path(dir) / "latest", ec)) {
    const std::string checkpoint = resolve_checkpoint_dir(dir);  // dir itself when a checkpoint
    if (checkpoint != dir) return find_tokenizer_in_dir(checkpoint);
  }
  fail("no tokenizer in directory ", dir, " (expected ", kModelFile, ", ", kLlama2cFile, ", ",
       kLegacyDescriptorFile, " or ", kDescriptorFile,
       "); pass --tokenizer with the tokenizer the model was trained with");
}

bool dir_has_tokenizer(const std::string& dir) {
  std::error_code ec;
  for (const char* name : {kModelFile, kLlama2cFile, kDescriptorFile, kLegacyDescriptorFile})
    if (fs::is_regular_file(fs::path(dir) / name, ec)) return true;
  return false;
}

std::string tokenizer_fingerprint(const std::string& spec) {
  std::error_code ec;
  const std::string file = fs::is_directory(spec, ec) ? find_tokenizer_in_dir(spec) : spec;
  if (file == "byte") return "byte";
  // A GGUF's tokenizer is the SentencePiece model inside: the same fingerprint as its .model.
  const std::string bytes = is_gguf_file(file) ? sentencepiece_model_in_gguf(file) : read_file(file);
  std::string fingerprint =
      cat("crc32 ", crc32_hex(crc32_of(bytes.data(), bytes.size())), ", ", bytes.size(), " bytes");
  // A Hugging Face tokenizer's BOS and EOS come from the files beside tokenizer.json
  // (tokenizer_config.json, generation_config.json): data prepared with another BOS there passed
  // as the model's and trained every document on another first token (a user trial).
  if (fs::path(file).extension() == ".json") {
    const std::unique_ptr<Tokenizer> t = load_tokenizer(file);
    if (t->kind() == "hf")
      fingerprint += cat(", BOS ", t->bos_id(), ", EOS ", nlohmann::json(t->eos_ids()).dump());
  }
  return fingerprint;
}

void check_same_tokenizer(const std::string& data_dir, const std::string& model_dir,
                          const std::string& what, const std::string& carried) {
  std::string data_tok, model_tok;
  std::error_code ec;
  try {
    data_tok = find_tokenizer_in_dir(data_dir);
    model_tok = fs::is_directory(model_dir, ec) ? find_tokenizer_in_dir(model_dir) : model_dir;
  } catch (const Error&) {
    return;  // one side carries no tokenizer: nothing to compare
  }
  const std::string a = tokenizer_fingerprint(data_tok), b = tokenizer_fingerprint(model_tok);
  // A --tokenizer other than the data's while the model carries the data's own (a user naming
  // a tokenizer by mistake): not "the model's", and the way on is to drop the option, not to
  // prepare the data again with it.
  CHAINLM_CHECK(a == b || carried.empty() || tokenizer_fingerprint(carried) != a, what,
                ": the data in ", data_dir, " was made with another tokenizer (", data_tok, ": ", a,
                ") than --tokenizer ", model_dir, " (", b,
                "); its token ids would mean other text. The model carries the data's tokenizer (",
                carried, "): drop --tokenizer");
  if (a == b) return;
  // stories260K ships tok512.bin and tok512.model: one vocabulary, two tokenizers. Told apart by
  // what the files are, not their names (a directory made before 2026-12 keeps a tok512.bin as
  // tokenizer.model).
  // Said only for one vocabulary in the two formats (a trial had it after a warning that the
  // vocabularies were 300 and 512), naming which file is which.
  std::string note;
  try {
    const std::unique_ptr<Tokenizer> d = load_tokenizer(data_tok), m = load_tokenizer(model_tok);
    const auto name = [](const Tokenizer& t) {
      return t.kind() == "llama2c" ? "a llama2.c tokenizer.bin" : "a SentencePiece .model";
    };
    const std::string kinds = d->kind() + "+" + m->kind();
    if (d->vocab_size() == m->vocab_size() &&
        (kinds == "llama2c+sentencepiece" || kinds == "sentencepiece+llama2c"))
      note = cat(". The data's is ", name(*d), " and the model's ", name(*m), " of one ",
                 d->vocab_size(),
                 "-token vocabulary: they are not the same tokenizer, they split some texts "
                 "differently");
  } catch (const Error&) {
  }
  fail(what, ": the data in ", data_dir, " was made with another tokenizer (", data_tok, ": ", a,
       ") than the model's (", model_tok, ": ", b,
       "); its token ids would mean other text. Prepare the data with the model's ",
       "tokenizer (chainlm prepare --tokenizer ", model_tok, ")", note);
}

// The files a Hugging Face directory keeps beside its tokenizer that chainlm does not read as
// the tokenizer but users and tools need: the chat template (serve picks the format from it),
// BOS/EOS and special tokens. Copied when the tokenizer comes from such a directory, so an
// export or a quantized copy of a chat model stays a chat model.
static void copy_tokenizer_companions(const fs::path& from_dir, const std::string& dir,
                                      std::initializer_list<const char*> names) {
  std::error_code ec;
  for (const char* name : names) {
    const fs::path from = from_dir / name, to = fs::path(dir) / name;
    if (!fs::is_regular_file(from, ec) || fs::equivalent(from, to, ec)) continue;
    write_file_atomic(to.string(), read_file(from.string()));
  }
}

// A GGUF keeps its chat template in its metadata (tokenizer.chat_template, where llama.cpp's
// converter and chainlm's export put it): written into dir as a Hugging Face
// tokenizer_config.json, with the BOS and EOS pieces, so a quantized copy or an HF export of a
// chat GGUF stays a chat model (the template was dropped, nothing said; a user trial).
static void write_gguf_companions(const std::string& gguf_path, const std::string& dir) {
  const GgufReader gguf(gguf_path);
  if (!gguf.has("tokenizer.chat_template")) return;
  nlohmann::json config = {{"chat_template", gguf.get_string("tokenizer.chat_template")}};
  if (gguf.has("tokenizer.ggml.tokens")) {
    const std::vector<std::string>& pieces = gguf.value("tokenizer.ggml.tokens").strings;
    for (const auto& [key, name] :
         {std::pair<const char*, const char*>{"tokenizer.ggml.bos_token_id", "bos_token"},
          {"tokenizer.ggml.eos_token_id", "eos_token"}})
      if (gguf.has(key)) {
        const uint64_t id = gguf.get_uint(key);
        if (id < pieces.size() && check_utf8(pieces[id]).ok()) config[name] = pieces[id];
      }
  }
  // A downloaded file's template may hold bytes that are not UTF-8: U+FFFD, not an exception.
  write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(),
                    config.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

void copy_sentencepiece_companions(const std::string& spec, const std::string& dir) {
  std::error_code ec;
  const std::string source = fs::is_directory(spec, ec) ? find_tokenizer_in_dir(spec) : spec;
  if (fs::is_regular_file(source, ec) && is_gguf_file(source))
    return write_gguf_companions(source, dir);
  if (fs::path(source).filename() != kModelFile) return;  // a .model file on its own
  copy_tokenizer_companions(fs::path(source).parent_path(), dir,
                            {"tokenizer_config.json", "generation_config.json",
                             "special_tokens_map.json", "chat_template.jinja"});
}

void save_tokenizer_to_dir(const std::string& spec, const std::string& dir) {
  std::error_code ec;
  std::string source = fs::is_directory(spec, ec) ? find_tokenizer_in_dir(spec) : spec;
  // Validate before writing, so a directory never gets a tokenizer that cannot be loaded.
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(source);
  const fs::path model = fs::path(dir) / kModelFile;
  const fs::path llama2c = fs::path(dir) / kLlama2cFile;
  const fs::path descriptor = fs::path(dir) / kDescriptorFile;
  const fs::path legacy = fs::path(dir) / kLegacyDescriptorFile;
  // A tokenizer.bin left from before would shadow every kind but a SentencePiece model in
  // find_tokenizer_in_dir, and beside one it would misname what the directory carries.
  if (tokenizer->kind() != "llama2c") fs::remove(llama2c, ec);
  if (tokenizer->kind() == "llama2c") {
    if (!fs::equivalent(source, llama2c, ec))
      write_file_atomic(llama2c.string(), read_file(source));
    fs::remove(model, ec);  // a model (or this tokenizer under its old name) would shadow it
  } else if (tokenizer->kind() == "hf") {
    save_hf_tokenizer_files(read_hf_tokenizer_files(source), dir);
    copy_tokenizer_companions(fs::path(source).parent_path(), dir,
                              {"chat_template.jinja", "special_tokens_map.json"});
    // Files that find_tokenizer_in_dir would take before tokenizer.json go.
    fs::remove(model, ec);
    fs::remove(descriptor, ec);
  } else if (tokenizer->kind() == "byte") {
    write_file_atomic(descriptor.string(), nlohmann::json{{"kind", "byte"}}.dump() + "\n");
    fs::remove(model, ec);  // a stale model would shadow the descriptor in find_tokenizer_in_dir
    // chainlm's own descriptor under the old name goes; a Hugging Face file stays.
    if (fs::is_regular_file(legacy, ec) && is_byte_descriptor(read_descriptor(legacy))) fs::remove(legacy, ec);
  } else {
    // A tokenizer.json left beside it is harmless (the model takes precedence) and may be a
    // Hugging Face file someone wants to keep, so it is not removed.
    // A GGUF's tokenizer is the SentencePiece model inside it, not the file.
    if (!fs::equivalent(source, model, ec))
      write_file_atomic(model.string(), is_gguf_file(source) ? sentencepiece_model_in_gguf(source) : read_file(source));
    copy_sentencepiece_companions(source, dir);  // from a HF directory: its chat template, BOS/EOS
  }
}

}  // namespace chainlm
