// make_corpus OUT_DIR SOURCE_DIR: writes the seed corpus of every fuzz target, OUT_DIR/<target>/
// seed-*, as valid files made by chainlm's own writers (save_model, write_safetensors,
// write_llama2c, write_token_shard, export_hf_llama, train_sentencepiece) plus the model
// configs of SOURCE_DIR/configs. Multi-file inputs are joined with fuzz_util.h's separator.
// Seeds are small on purpose: libFuzzer's default maximum input length is the largest seed.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/atomic_file.h"
#include "io/llama2c.h"
#include "io/llama2c_test_util.h"  // tests/: small llama2.c models and tokenizer.bin bytes
#include "io/safetensors.h"
#include "model/gguf_convert.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/hf_llama_convert.h"
#include "model/model.h"

namespace fs = std::filesystem;
using namespace chainlm;

namespace {

fs::path g_out;
fs::path g_work;  // scratch space for writers that take paths
int g_seeds = 0;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_out / target;
  fs::create_directories(dir);
  std::ofstream out(dir / ("seed-" + name), std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), (std::streamsize)bytes.size());
  CHAINLM_CHECK(out.good(), "cannot write seed ", (dir / name).string());
  ++g_seeds;
}

std::string work_file(const std::string& name) { return (g_work / name).string(); }

ModelConfig tiny_config(std::vector<int> chains, bool kv_share, bool tie, int phd_repeat = 1) {
  ModelConfig c;
  c.dim = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = kv_share ? 1 : 2;
  c.ffn_dim = 16;
  c.vocab_size = 16;
  c.chains = std::move(chains);
  c.kv_share = kv_share;
  c.tie_embeddings = tie;
  c.max_seq_len = 16;
  c.phd.repeat = phd_repeat;
  validate_config(c, "make_corpus");
  return c;
}

// save_model's two files of a random model, joined.
std::string checkpoint_bytes(const ModelConfig& c, uint64_t seed_value, const char* quant = nullptr) {
  Model model(c);
  model.init_random(seed_value);
  if (quant) model.quantize_weights(parse_quant_type(quant));  // a `chainlm quantize` checkpoint
  const std::string dir = work_file("ckpt-" + std::to_string(seed_value));
  save_model(model, dir);
  return fuzz::join_parts(
      {read_file(dir + "/config.json"), read_file(dir + "/model.safetensors")});
}

void config_seeds(const fs::path& source_dir) {
  for (const auto& e : fs::directory_iterator(source_dir / "configs"))
    if (e.path().extension() == ".json")
      seed("config_fuzzer", e.path().filename().string(), read_file(e.path().string()));
  seed("config_fuzzer", "tiny-colm.json",
       config_to_json(tiny_config({1, 1}, false, false)).dump(1));
  seed("config_fuzzer", "tiny-phd.json",
       config_to_json(tiny_config({1}, false, true, 2)).dump());
  seed("config_fuzzer", "minimal.json",
       R"({"dim": 8, "n_layers": 1, "n_heads": 2, "ffn_dim": 16, "vocab_size": 16})");
}

void checkpoint_seeds() {
  const std::string air = checkpoint_bytes(tiny_config({1, 1}, true, false), 1);
  seed("checkpoint_fuzzer", "colm-air", air);
  seed("checkpoint_fuzzer", "colm-tied", checkpoint_bytes(tiny_config({1, 1}, false, true), 2));
  seed("checkpoint_fuzzer", "phd", checkpoint_bytes(tiny_config({1}, false, true, 2), 3));
  seed("checkpoint_fuzzer", "q4_0", checkpoint_bytes(tiny_config({1, 1}, true, false), 4, "q4_0"));
  seed("checkpoint_fuzzer", "q8_0", checkpoint_bytes(tiny_config({1, 1}, false, true), 5, "q8_0"));
  const std::string tokenizer_json = R"({"kind": "byte"})";
  seed("checkpoint_fuzzer", "with-tokenizer",
       air + std::string(fuzz::kPartSeparator) + tokenizer_json);
  seed("checkpoint_fuzzer", "run-dir",
       air + std::string(fuzz::kPartSeparator) + tokenizer_json +
           std::string(fuzz::kPartSeparator) + "step-00000001\n");
}

void safetensors_seeds() {
  Model model(tiny_config({1, 1}, true, false));
  model.init_random(4);
  save_model(model, work_file("st"));
  seed("safetensors_fuzzer", "model", read_file(work_file("st/model.safetensors")));

  // Hand-built: F16, BF16 and I32 data, a scalar, an empty tensor and metadata.
  std::string header =
      R"({"__metadata__": {"format": "pt"},)"
      R"("h": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},)"
      R"("b": {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]},)"
      R"("i": {"dtype": "I32", "shape": [1], "data_offsets": [14, 18]},)"
      R"("s": {"dtype": "F32", "shape": [], "data_offsets": [18, 22]},)"
      R"("e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [22, 22]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const uint64_t len = header.size();
  std::string bytes(reinterpret_cast<const char*>(&len), 8);
  bytes += header;
  const uint16_t halves[4] = {0x3c00, 0xc000, 0x7c00, 0x0001};  // 1, -2, inf, subnormal
  const uint16_t bf16[3] = {0x3f80, 0x7fc0, 0x8000};            // 1, nan, -0
  const int32_t i = 7;
  const float s = 0.5f;
  bytes.append(reinterpret_cast<const char*>(halves), 8);
  bytes.append(reinterpret_cast<const char*>(bf16), 6);
  bytes.append(reinterpret_cast<const char*>(&i), 4);
  bytes.append(reinterpret_cast<const char*>(&s), 4);
  seed("safetensors_fuzzer", "dtypes", bytes);

  // Written by write_safetensors: one small tensor, no metadata.
  float w[6] = {1, 2, 3, 4, 5, 6};
  write_safetensors(work_file("one.safetensors"), {TensorView{"w", {2, 3}, w}});
  seed("safetensors_fuzzer", "one", read_file(work_file("one.safetensors")));
}

Llama2cHeader tiny_llama2c_header(bool shared) {
  Llama2cHeader h;
  h.dim = 8;
  h.hidden_dim = 12;
  h.n_layers = 1;
  h.n_heads = 2;
  h.n_kv_heads = 1;
  h.vocab_size = 10;
  h.seq_len = 4;
  h.shared_classifier = shared;
  return h;
}

void llama2c_seeds() {
  for (bool shared : {true, false}) {
    const std::string path = work_file(shared ? "shared.bin" : "unshared.bin");
    write_llama2c(testing::random_llama2c(tiny_llama2c_header(shared), 5), path);
    seed("llama2c_model_fuzzer", shared ? "shared" : "unshared", read_file(path));
  }
  // A vocabulary as run.c's tokenizer.bin holds one: unk, BOS, EOS, byte pieces, merges.
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  std::vector<float> scores = {0, 0, 0};
  for (int b : {0x0a, 0x20, 0x41, 0x61, 0xc3, 0xe2}) {
    char piece[8];
    std::snprintf(piece, sizeof piece, "<0x%02X>", b);
    pieces.push_back(piece);
    scores.push_back(0);
  }
  for (const char* p : {" ", "a", "b", "n", "o", " a", "an", " an", "ab", "\xc3\xa9", "\xe2\x96\x81"}) {
    pieces.push_back(p);
    scores.push_back(-(float)pieces.size());
  }
  seed("llama2c_tokenizer_fuzzer", "small", testing::tokenizer_bin_bytes(pieces, scores));
  // Every byte falls back: ids 3..258 are <0x00>..<0xFF>.
  std::vector<std::string> bytes_vocab = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) {
    char piece[8];
    std::snprintf(piece, sizeof piece, "<0x%02X>", b);
    bytes_vocab.push_back(piece);
  }
  bytes_vocab.push_back(" t");
  seed("llama2c_tokenizer_fuzzer", "bytes",
       testing::tokenizer_bin_bytes(bytes_vocab, std::vector<float>(bytes_vocab.size(), -1.0f)));
}

void sentencepiece_seeds() {
  // A corpus with enough distinct pairs for a handful of merges beyond the 259 fixed pieces.
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "to",
                         "another", "place", "where", "dogs", "were", "sleeping", "quietly"};
  std::string corpus;
  for (int line = 0; line < 200; ++line) {
    for (int w = 0; w < 9; ++w) {
      corpus += words[(line * 7 + w * 3 + line / 5) % 17];
      corpus += w == 8 ? "\n" : " ";
    }
  }
  write_file_atomic(work_file("corpus.txt"), corpus);
  train_sentencepiece(work_file("corpus.txt"), 300, work_file("sp.model"), 1);
  seed("sentencepiece_fuzzer", "bpe300", read_file(work_file("sp.model")));
}

// GGUF files as export --format gguf writes them: f32 with the SentencePiece tokenizer inside,
// q8_0 and q4_0 (block tensors, Q8_0 tables), and f16 without a tokenizer.
void gguf_seeds() {
  // Rows of 32: whole blocks, so the quantized files hold Q8_0/Q4_0 tensors. The vocabulary is
  // that of sentencepiece_seeds' model, embedded in the f32 file.
  ModelConfig c = tiny_config({1}, false, false);
  c.dim = 32;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.ffn_dim = 32;
  c.vocab_size = 300;
  validate_config(c, "gguf seed");
  Model model(c);
  model.init_random(8);
  for (const char* type : {"f32", "q8_0", "q4_0", "f16"}) {
    const bool with_tokenizer = std::string(type) == "f32";
    const GgufExportOptions o{.chains = 1,
                              .type = type,
                              .tokenizer = with_tokenizer ? work_file("sp.model") : "",
                              .name = type,
                              .chat_template = ""};
    export_gguf(model, o, work_file(std::string(type) + ".gguf"));
    seed("gguf_fuzzer", type, read_file(work_file(std::string(type) + ".gguf")));
  }
}

void hf_seeds() {
  Model model(tiny_config({1}, false, false));
  model.init_random(6);
  export_hf_llama(model, 1, work_file("hf"));
  const std::string config = read_file(work_file("hf/config.json"));
  seed("hf_dir_fuzzer", "single",
       fuzz::join_parts({config, read_file(work_file("hf/model.safetensors"))}));

  // The same weights in two shards with an index, as transformers writes large models.
  SafetensorsReader reader(work_file("hf/model.safetensors"));
  std::vector<Tensor> tensors;
  std::vector<TensorView> shard[2];
  nlohmann::json weight_map = nlohmann::json::object();
  const auto& entries = reader.entries();
  tensors.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    tensors.push_back(reader.read_f32(entries[i].name));
    const int s = i < entries.size() / 2 ? 0 : 1;
    shard[s].push_back({entries[i].name, tensors.back().shape, tensors.back().data.data()});
    weight_map[entries[i].name] = s == 0 ? "model-00001-of-00002.safetensors"
                                         : "model-00002-of-00002.safetensors";
  }
  write_safetensors(work_file("shard1"), shard[0], {{"format", "pt"}});
  write_safetensors(work_file("shard2"), shard[1], {{"format", "pt"}});
  const nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  seed("hf_dir_fuzzer", "sharded",
       fuzz::join_parts({config, index.dump(1), read_file(work_file("shard1")),
                         read_file(work_file("shard2"))}));
}

void token_shard_seeds() {
  std::vector<uint32_t> small;
  for (uint32_t i = 0; i < 40; ++i) small.push_back(i % 7 == 0 ? 256 : 'a' + i % 26);
  write_token_shard(work_file("val16.bin"), small, 258);
  seed("token_shard_fuzzer", "u16", read_file(work_file("val16.bin")));
  std::vector<uint32_t> wide = {1, 70000, 5, 65535, 65536, 2};
  write_token_shard(work_file("val32.bin"), wide, 70001);
  seed("token_shard_fuzzer", "u32", read_file(work_file("val32.bin")));
  write_token_shard(work_file("empty.bin"), {}, 258);
  seed("token_shard_fuzzer", "empty", read_file(work_file("empty.bin")));
  seed("token_shard_fuzzer", "text", "A first document.\n\n%\nA second one, with two\nlines.\n");
}

void eval_seeds() {
  seed("eval_choice_fuzzer", "two-tasks",
       "A man is sitting on a roof. he\n3\nis using wrap to wrap a pair of skis.\n"
       "is ripping level tiles off.\nis holding a rubik's cube.\nstarts pulling up roofing.\n"
       "A cat sat\n0\non the mat.\nin the sky.\r\nunder water.\non a cloud.\n");
  seed("eval_pairs_fuzzer", "blimp",
       R"({"sentence_good": "Many girls insulted themselves.", "sentence_bad": "Many girls insulted herself.", "field": "syntax", "UID": "anaphor_number_agreement", "pair_id": 0})"
       "\n\n"
       R"({"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep."})"
       "\n");
}

void completion_request_seeds() {
  const std::map<std::string, std::string> bodies = {
      {"minimal", R"({"prompt": "Once upon a time"})"},
      {"full",
       R"({"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["\n", "The end"], "stream": true, "chains": 2})"},
      {"schedule", R"({"prompt": "Hi", "chain_schedule": "1:16,4", "stop": "x"})"},
      {"openai",
       R"({"model": "chainlm", "prompt": "abc", "n": 1, "best_of": 1, "echo": false, "logprobs": null, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "user": "u", "stream_options": {}, "suffix": null})"},
      {"stop-overlap", R"({"prompt": "aab aab abab", "stop": ["ab", "bab", "aab a"]})"},
      {"tokens-echo", R"({"prompt": [104, 105], "echo": true, "logit_bias": {"65": 3}, "frequency_penalty": -1})"},
      {"logprobs", R"({"prompt": "hi", "logprobs": 5, "presence_penalty": 2})"},
  };
  for (const auto& [name, body] : bodies) seed("completion_request_fuzzer", name, body);
  const std::map<std::string, std::string> chats = {
      {"chat",
       R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": true, "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2})"},
      {"parts", R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}], "max_completion_tokens": 3, "presence_penalty": 0.5, "logit_bias": {"65": -100}})"},
      {"tokenize", R"({"content": "café", "add_special": true})"},
      {"detokenize", R"({"tokens": [256, 104, 105, 257]})"},
  };
  for (const auto& [name, body] : chats) seed("chat_request_fuzzer", name, body);
}

// Corpus files as users have them: text with documents, JSONL, a gzip file, invalid UTF-8.
// tokenizer.json files of every shape the reader knows (tests/vectors/hf_tokenizers), and a
// small byte-level one so the fuzzer's inputs can stay short.
void hf_tokenizer_seeds(const std::string& source_dir) {
  const std::string dir = source_dir + "/tests/vectors/hf_tokenizers/";
  for (const char* name : {"llama3", "sp_legacy", "sp_split_unk"})
    seed("hf_tokenizer_fuzzer", name, read_file(dir + name + ".tokenizer.json"));
  seed("hf_tokenizer_fuzzer", "tiny",
       R"({"added_tokens":[{"id":5,"content":"<s>","special":true},{"id":6,"content":"</s>","special":true}],)"
       R"("normalizer":null,"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":)"
       R"({"Regex":" ?\p{L}+|\p{N}{1,3}|\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel",)"
       R"("add_prefix_space":false,"use_regex":false}]},"decoder":{"type":"ByteLevel"},"model":{"type":"BPE",)"
       R"("ignore_merges":true,"vocab":{"a":0,"b":1,"ab":2,"Ġ":3,"Ġab":4},"merges":["a b","Ġ ab"]}})");
}

void corpus_reader_seeds(const std::string& source_dir) {
  const std::string fixtures = source_dir + "/tests/io/data/compressed/";
  for (const char* name : {"poem.txt", "poem.jsonl", "poem.txt.gz", "poem.txt.zst"})
    seed("corpus_reader_fuzzer", name, read_file(fixtures + name));
  seed("corpus_reader_fuzzer", "latin1", "caf\xE9 au lait\n\nna\xEFve\n%\nok\n");
  seed("corpus_reader_fuzzer", "records", "{\"text\": \"a\\nb\"}\n\n{\"text\": \"\"}\n[1]\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_corpus OUT_DIR SOURCE_DIR\n";
    return 2;
  }
  try {
    g_out = argv[1];
    g_work = g_out / ".work";
    fs::remove_all(g_work);
    fs::create_directories(g_work);
    config_seeds(argv[2]);
    checkpoint_seeds();
    safetensors_seeds();
    llama2c_seeds();
    sentencepiece_seeds();
    hf_seeds();
    gguf_seeds();
    token_shard_seeds();
    eval_seeds();
    completion_request_seeds();
    corpus_reader_seeds(argv[2]);
    hf_tokenizer_seeds(argv[2]);
    fs::remove_all(g_work);
  } catch (const std::exception& e) {
    std::cerr << "make_corpus: " << e.what() << "\n";
    return 1;
  }
  std::cout << "make_corpus: " << g_seeds << " seeds in " << g_out.string() << "\n";
  return 0;
}
