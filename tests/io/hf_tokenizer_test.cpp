// Hugging Face tokenizer.json against the tokenizers library itself: the vectors in
// tests/vectors/hf_tokenizers were made by tokenizers 0.22 (make_vectors.mjs there), on five
// tokenizer shapes (LLaMA-3, GPT-2/SmolLM, two SentencePiece-style conversions, Metaspace with
// <unk>), over English, code, CJK, emoji, combining marks, numbers, whitespace runs, special
// tokens in text and invalid UTF-8.
#include "io/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/hf_added_token.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kVectorDir = std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/hf_tokenizers/";

HfTokenizerFiles vector_files(const std::string& name) {
  HfTokenizerFiles f;
  f.where = kVectorDir + name + ".tokenizer.json";
  f.tokenizer_json = read_file(f.where);
  f.tokenizer_config = read_file(kVectorDir + name + ".tokenizer_config.json");
  return f;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

const json& vectors() {
  static const json v = json::parse(read_file(kVectorDir + "vectors.json"));
  return v;
}

std::map<std::string, std::unique_ptr<Tokenizer>>& tokenizers() {
  static std::map<std::string, std::unique_ptr<Tokenizer>> t;
  if (t.empty())
    for (const char* name :
         {"llama3", "gpt2", "gpt2_added", "whitespace", "whitespace_split", "bpe_prefix",
          "sp_legacy", "sp_metaspace", "sp_split_unk", "sp_strip_first"})
      t[name] = hf_tokenizer_from_files(vector_files(name));
  return t;
}

std::set<int> special_ids(const std::string& name) {
  std::set<int> ids;
  const json j = json::parse(vector_files(name).tokenizer_json);
  for (const json& t : j["added_tokens"])
    if (t["special"].get<bool>()) ids.insert(t["id"].get<int>());
  return ids;
}

std::string show(const std::string& s) { return json(s).dump(); }

TEST(HfTokenizer, EncodesAsHuggingFaceTokenizersDoes) {
  int checked = 0;
  for (const json& c : vectors()["cases"]) {
    if (!c.contains("ids")) continue;
    const Tokenizer& tok = *tokenizers().at(c["tokenizer"].get<std::string>());
    const std::string text = c.contains("hex") ? from_hex(c["hex"].get<std::string>()) : c["text"].get<std::string>();
    const std::vector<int> want = c["ids"].get<std::vector<int>>();
    EXPECT_EQ(tok.encode(text), want) << c["tokenizer"] << " on " << show(text);
    if (c.contains("decoded")) {  // (bpe_prefix's cases are encodings only)
      EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>())
          << c["tokenizer"] << " decoding " << show(text);
    }
    ++checked;
  }
  EXPECT_GT(checked, 250);
}

TEST(HfTokenizer, DecodesIdSlicesAsHuggingFaceTokenizersDoes) {
  int checked = 0, refused = 0;
  for (const json& c : vectors()["cases"]) {
    if (!c.contains("decode")) continue;
    const Tokenizer& tok = *tokenizers().at(c["tokenizer"].get<std::string>());
    const std::vector<int> ids = c["decode"].get<std::vector<int>>();
    const bool outside = std::any_of(ids.begin(), ids.end(), [&](int id) { return id >= tok.vocab_size(); });
    if (outside) {
      // tokenizers skips ids it does not know; chainlm's contract is to refuse them.
      EXPECT_THROW(tok.decode(ids), Error);
      ++refused;
      continue;
    }
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << c["tokenizer"] << " decoding " << json(ids);
    ++checked;
  }
  EXPECT_GT(checked, 500);
  EXPECT_EQ(refused, 9);  // one per tokenizer but bpe_prefix (encodings only)
}

// Streaming: the pieces decode_token gives after BOS add up to decode's text for valid text.
// A BOS starts a new text (its first piece loses the leading space, as SentencePiece's does),
// so the pieces add up to the texts between BOS tokens, each decoded alone. decode_token sees
// one predecessor only: after another hidden token (<unk>, EOS, <|im_start|>) it continues a
// text, which differs from tokenizers only where such a token opens a text (checked apart).
TEST(HfTokenizer, StreamedPiecesAddUpToTheDecodedText) {
  int opened_by_hidden = 0;
  for (const json& c : vectors()["cases"]) {
    if (!c.contains("ids") || c.contains("hex")) continue;
    const Tokenizer& tok = *tokenizers().at(c["tokenizer"].get<std::string>());
    const std::vector<int> ids = c["ids"].get<std::vector<int>>();
    std::string streamed, texts;
    std::vector<int> text;
    int prev = tok.bos_id();
    bool opened = false;
    for (int id : ids) {
      streamed += tok.decode_token(prev, id);
      if (id == tok.bos_id()) {
        texts += tok.decode(text);
        text.clear();
      }
      opened = opened || (text.empty() && special_ids(c["tokenizer"].get<std::string>()).count(id) && id != tok.bos_id());
      text.push_back(id);
      prev = id;
    }
    texts += tok.decode(text);
    if (opened) {
      ++opened_by_hidden;
      continue;
    }
    EXPECT_EQ(streamed, texts) << c["tokenizer"] << " streaming " << show(c["text"].get<std::string>());
  }
  // "<unk> <0x41>" (the four SentencePiece shapes), "<|im_start|>user..." (GPT-2, whitespace,
  // whitespace_split), and in
  // gpt2_added that one and the 8 texts that open with a special added token ("[SW]", "  <L>",
  // "<R>\n\nx", ...).
  EXPECT_EQ(opened_by_hidden, 16);
  const Tokenizer& sp = *tokenizers().at("sp_metaspace");
  const int unk = 0, space_a = sp.encode("x a").back();
  EXPECT_EQ(sp.decode({space_a}), "a");
  EXPECT_EQ(sp.decode_token(sp.bos_id(), space_a), "a");
  EXPECT_EQ(sp.decode_token(unk, space_a), " a");
}

TEST(HfTokenizer, BosAndEosComeFromTheFilesBesideIt) {
  const Tokenizer& llama3 = *tokenizers().at("llama3");
  EXPECT_EQ(llama3.kind(), "hf");
  EXPECT_EQ(llama3.encode("<|begin_of_text|>"), std::vector<int>{llama3.bos_id()});
  EXPECT_EQ(llama3.encode("<|eot_id|>"), std::vector<int>{llama3.eos_id()});
  EXPECT_EQ(llama3.decode_token(llama3.bos_id(), llama3.eos_id()), "");

  // LLaMA-3 instruct: config.json lists several ids that end a turn.
  HfTokenizerFiles f = vector_files("llama3");
  const int end_of_text = llama3.encode("<|end_of_text|>").at(0);
  f.model_config = json{{"bos_token_id", llama3.bos_id()}, {"eos_token_id", {end_of_text, llama3.eos_id()}}}.dump();
  const auto instruct = hf_tokenizer_from_files(f);
  EXPECT_EQ(instruct->eos_id(), llama3.eos_id());  // tokenizer_config.json's comes first
  EXPECT_TRUE(instruct->is_eos(end_of_text));
  EXPECT_TRUE(instruct->is_eos(llama3.eos_id()));
  EXPECT_FALSE(instruct->is_eos(llama3.bos_id()));
  EXPECT_FALSE(llama3.is_eos(end_of_text));

  // Without tokenizer_config.json: the family's names.
  f = vector_files("sp_legacy");
  f.tokenizer_config.clear();
  const auto sp = hf_tokenizer_from_files(f);
  EXPECT_EQ(sp->bos_id(), 1);
  EXPECT_EQ(sp->eos_id(), 2);
}

std::string repeated(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

std::string error_of(const HfTokenizerFiles& f) {
  try {
    hf_tokenizer_from_files(f);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

HfTokenizerFiles edited(const std::string& name, const std::function<void(json&)>& edit) {
  HfTokenizerFiles f = vector_files(name);
  json j = json::parse(f.tokenizer_json);
  edit(j);
  f.tokenizer_json = j.dump();
  return f;
}

TEST(HfTokenizer, RefusesWhatItCannotReadByName) {
  HfTokenizerFiles truncated = vector_files("llama3");
  truncated.tokenizer_json = "{\"model\": {\"type\": \"BPE\", ";
  EXPECT_NE(error_of(truncated).find("not valid JSON"), std::string::npos) << error_of(truncated);

  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& j) { j.erase("model"); }, "no \"model\""},
      {[](json& j) { j["model"]["type"] = "WordPiece"; }, "'WordPiece'; chainlm reads BPE models"},
      {[](json& j) { j["model"].erase("merges"); }, "model.merges is missing"},
      {[](json& j) { j["model"]["merges"].push_back("Ġzzq Ġqqz"); },
       "names a token not in the vocab"},
      {[](json& j) { j["model"]["merges"].push_back("a b c"); },
       "not two tokens separated by one space"},
      {[](json& j) { j["model"]["vocab"]["x"] = "seven"; },
       "model.vocab['x'] is not a non-negative id"},
      {[](json& j) { j["model"]["unk_token"] = "<nope>"; },
       "unk_token '<nope>' is not in the vocab"},
      {[](json& j) {
         j["normalizer"] = {{"type", "NFC"}};
       },
       "normalizer: 'NFC' is not supported"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}"; },
       "does not compile"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
       "unknown split behavior 'Sideways'"},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
       },
       "'BertPreTokenizer' is not supported"},
      {[](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder: 'WordPiece' is not supported"},
      {[](json& j) {
         j["decoder"] = {{"type", "Sequence"}};
       },
       "needs the array 'decoders'"},
      {[](json& j) { j["added_tokens"][0].erase("id"); }, "an added token needs an 'id'"},
      // What tokenizers 0.22 refuses, or reads otherwise than the file says (an interop trial,
      // each checked against it): required fields, a format version it does not know, and
      // added-token ids it does not use (it gives an added token the vocabulary's id for the
      // same text, and the next free one otherwise, whatever the file says).
      {[](json& j) { j["version"] = "2.0"; }, "version \"2.0\" is not one tokenizers knows"},
      {[](json& j) { j["added_tokens"][0].erase("special"); },
       "has no 'special' (tokenizers requires"},
      {[](json& j) { j["added_tokens"][1]["id"] = j["added_tokens"][0]["id"]; },
       "but Hugging Face tokenizers gives it id"},
      {[](json& j) {
         json a = j["added_tokens"][0];
         a["content"] = "a";  // in the vocabulary
         a["id"] = j["added_tokens"].back()["id"].get<int>() + 1;
         j["added_tokens"].push_back(a);
       },
       "(the model's vocabulary holds it under that id)"},
      {[](json& j) {
         j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "a"}}}};
       },
       "normalizer: 'content' is missing (tokenizers requires it)"},
      {[](json& j) {
         j["normalizer"] = {{"type", "Strip"}, {"strip_right", true}};
       },
       "normalizer: 'strip_left' is missing"},
      {[](json& j) {
         j["decoder"] = {{"type", "Replace"}, {"pattern", {{"String", "a"}}}};
       },
       "decoder: 'content' is missing"},
  };
  for (const auto& [edit, want] : cases) {
    const std::string got = error_of(edited("llama3", edit));
    EXPECT_NE(got.find(want), std::string::npos) << "want '" << want << "' in: " << got;
    EXPECT_NE(got.find("llama3.tokenizer.json"), std::string::npos) << got;
  }

  // A pattern that backtracks without end on some text is an error there, not a hang.
  const auto slow = hf_tokenizer_from_files(edited("llama3", [](json& j) {
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}+)+\\d";
  }));
  try {
    slow->encode(std::string(40, 'a') + "?");
    ADD_FAILURE() << "a catastrophic regex ran to the end";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(\\p{L}+)+\\d"), std::string::npos) << e.what();
  }

  HfTokenizerFiles bad_config = vector_files("llama3");
  bad_config.tokenizer_config = json{{"eos_token", "<|no_such|>"}}.dump();
  EXPECT_NE(error_of(bad_config).find("token '<|no_such|>' is not in the vocabulary"), std::string::npos)
      << error_of(bad_config);
  // An id config.json gives that the vocabulary lacks is named with config.json.
  HfTokenizerFiles bad_id = vector_files("llama3");
  bad_id.model_config = json{{"eos_token_id", {5, 100000}}}.dump();
  EXPECT_NE(error_of(bad_id).find("config.json: eos_token_id 100000 is outside the vocabulary of"),
            std::string::npos)
      << error_of(bad_id);
  HfTokenizerFiles no_eos = edited("gpt2", [](json& j) { j["added_tokens"] = json::array(); });
  no_eos.tokenizer_config.clear();
  EXPECT_NE(error_of(no_eos).find("cannot tell the end-of-text token"), std::string::npos) << error_of(no_eos);
}

// Crafted files from the internet (a security review): each is an error naming the file, never
// a crash, a wrapped id or gigabytes. An added id of 2^31 went negative (SIGSEGV), 2^32 + 5 read
// as 5; a Sequence 100,000 deep overflowed the stack; one vocabulary id of 3e8 made tables of
// 10 GB; a Replace of "a" by 1,000 of them four times over took a 4-byte text to 4 GB.
TEST(HfTokenizer, CraftedFilesAreRefusedNotObeyed) {
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& j) { j["added_tokens"][0]["id"] = 2147483648ull; },
       "added token id 2147483648 is too large"},
      {[](json& j) { j["added_tokens"][0]["id"] = 4294967301ull; },
       "added token id 4294967301 is too large"},
      {[](json& j) {
         j["model"]["vocab"]["zzzz"] = 300000000;
         j["added_tokens"] = json::array();  // (whose ids would be refused first)
       },
       "its ids run up to 300000000 for"},
      {[](json& j) {
         json deep = {{"type", "Prepend"}, {"prepend", "x"}};
         for (int i = 0; i < 200; ++i)
           deep = {{"type", "Sequence"}, {"normalizers", json::array({deep})}};
         j["normalizer"] = deep;
       },
       "nests deeper than 128 levels"},
  };
  for (const auto& [edit, want] : cases) {
    const std::string got = error_of(edited("llama3", edit));
    EXPECT_NE(got.find(want), std::string::npos) << "want '" << want << "' in: " << got;
    EXPECT_NE(got.find("llama3.tokenizer.json"), std::string::npos) << got;
  }
  // Refused as it is read (a server found out at its first request), since ordinary text grows.
  const std::string grows = error_of(edited("llama3", [](json& j) {
    json replace = {
        {"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", std::string(1000, 'a')}};
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({replace, replace, replace, replace})}};
  }));
  EXPECT_NE(grows.find("more than a tokenizer's normalizer makes"), std::string::npos) << grows;
  EXPECT_NE(grows.find("found normalizing ordinary text as the tokenizer was read"),
            std::string::npos)
      << grows;
  // Growth that only text without an "a" escapes is still caught at encode time.
  const auto grows_on_q = hf_tokenizer_from_files(edited("llama3", [](json& j) {
    json replace = {{"type", "Replace"},
                    {"pattern", {{"String", "\u00e9"}}},
                    {"content", repeated("\u00e9", 1000)}};
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({replace, replace, replace, replace})}};
  }));
  try {
    grows_on_q->encode("\u00e9\u00e9\u00e9\u00e9b");
    ADD_FAILURE() << "a normalizer was let grow a text 10^12 times";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than a tokenizer's normalizer makes"),
              std::string::npos)
        << e.what();
  }
  // config.json's ids are read whole (2^40 wrapped into some id).
  HfTokenizerFiles huge_id = vector_files("llama3");
  huge_id.model_config = json{{"eos_token_id", 1099511627776ull}}.dump();
  EXPECT_NE(error_of(huge_id).find("'eos_token_id' must be an integer id"), std::string::npos)
      << error_of(huge_id);
}

// A Hugging Face directory is a tokenizer spec; saving it into a checkpoint keeps what was read.
TEST(HfTokenizer, DirectoriesLoadAndSaveTheFilesTogether) {
  testing::TempDir tmp;
  const fs::path hf = tmp.path() / "hf", ckpt = tmp.path() / "ckpt";
  fs::create_directories(hf);
  fs::create_directories(ckpt);
  fs::copy_file(kVectorDir + "llama3.tokenizer.json", hf / "tokenizer.json");
  fs::copy_file(kVectorDir + "llama3.tokenizer_config.json", hf / "tokenizer_config.json");
  const auto reference = hf_tokenizer_from_files(vector_files("llama3"));
  const int end_of_text = reference->encode("<|end_of_text|>").at(0);
  write_file_atomic((hf / "config.json").string(),
                    json{{"eos_token_id", {end_of_text, reference->eos_id()}}}.dump());

  EXPECT_EQ(find_tokenizer_in_dir(hf.string()), (hf / "tokenizer.json").string());
  const auto from_dir = load_tokenizer(hf.string());
  // LLaMA-3 lists 256 special tokens before its "model": tens of kB into the file.
  json many = json::parse(read_file((hf / "tokenizer.json").string()));
  for (int i = 0; i < 250; ++i)
    many["added_tokens"].push_back(testing::special_added_token(
        reference->vocab_size() + i, "<|reserved_special_token_" + std::to_string(i) + "|>"));
  write_file_atomic(tmp.file("many.tokenizer.json"), many.dump(2));
  const auto reserved = load_tokenizer(tmp.file("many.tokenizer.json"));
  EXPECT_EQ(reserved->vocab_size(), reference->vocab_size() + 250);
  EXPECT_EQ(reserved->encode("a<|reserved_special_token_7|>"),
            (std::vector<int>{reference->encode("a").at(0), reference->vocab_size() + 7}));
  const std::string text = "It's 1234 cats 🐈 <|eot_id|> over\n\n  there";
  EXPECT_EQ(from_dir->encode(text), reference->encode(text));
  EXPECT_TRUE(from_dir->is_eos(end_of_text));

  // A stale SentencePiece model would shadow the saved tokenizer.json: it goes.
  write_file_atomic((ckpt / "tokenizer.model").string(), "stale");
  save_tokenizer_to_dir(hf.string(), ckpt.string());
  EXPECT_FALSE(fs::exists(ckpt / "tokenizer.model"));
  const auto saved = load_tokenizer(ckpt.string());
  EXPECT_EQ(saved->encode(text), reference->encode(text));
  EXPECT_EQ(saved->bos_id(), from_dir->bos_id());
  EXPECT_EQ(saved->eos_id(), from_dir->eos_id());
  EXPECT_TRUE(saved->is_eos(end_of_text));  // kept in generation_config.json
  EXPECT_EQ(tokenizer_fingerprint(ckpt.string()), tokenizer_fingerprint(hf.string()));
  EXPECT_EQ(read_file((ckpt / "tokenizer_config.json").string()), read_file((hf / "tokenizer_config.json").string()));
}

// A HF directory with both tokenizer.model and tokenizer.json (TinyLlama-chat, Llama-2 fine-tunes):
// the SentencePiece model is the tokenizer unless the json adds tokens it lacks. A chat fine-tune
// that added <|im_start|>/<|im_end|> lost them to the model: its prompts were spelled as text
// and generation never stopped at its EOS.
TEST(HfTokenizer, ADirectoryTakesTheJsonWhenItAddsTokensTheModelLacks) {
  const std::string sp =
      std::string(CHAINLM_SOURCE_DIR) + "/../shared/data/stories260K/tok512.model";
  if (!fs::exists(sp)) GTEST_SKIP() << "needs " << sp << " (../shared/data)";
  testing::TempDir tmp;
  const fs::path dir = tmp.path() / "hf";
  fs::create_directories(dir);
  write_file_atomic((dir / "tokenizer.model").string(), read_file(sp));
  nlohmann::json j = nlohmann::json::parse(read_file(kVectorDir + "sp_legacy.tokenizer.json"));
  write_file_atomic((dir / "tokenizer.json").string(), j.dump());
  EXPECT_EQ(find_tokenizer_in_dir(dir.string()),
            (dir / "tokenizer.model").string());  // adds nothing
  const int first_added = (int)j["model"]["vocab"].size();
  ASSERT_GE(first_added, 512);
  j["added_tokens"].push_back(testing::special_added_token(first_added, "<|im_start|>"));
  j["added_tokens"].push_back(testing::special_added_token(first_added + 1, "<|im_end|>"));
  write_file_atomic((dir / "tokenizer.json").string(), j.dump());
  EXPECT_EQ(find_tokenizer_in_dir(dir.string()), (dir / "tokenizer.json").string());
  const auto tok = load_tokenizer(dir.string());
  EXPECT_EQ(tok->vocab_size(), first_added + 2);
  EXPECT_EQ(tok->encode("<|im_start|>").at(0), first_added);
}

// Data and model "share a tokenizer" when their tokenizer.json are the same bytes and the files
// beside them give the same BOS and EOS: a data directory prepared with another bos_token in
// its tokenizer_config.json passed the check and trained every document on another first token.
TEST(HfTokenizer, ABosSetBesideTheJsonIsPartOfTheTokenizer) {
  testing::TempDir tmp;
  const fs::path data = tmp.path() / "data", model = tmp.path() / "model";
  for (const fs::path& d : {data, model}) {
    fs::create_directories(d);
    fs::copy_file(kVectorDir + "llama3.tokenizer.json", d / "tokenizer.json");
  }
  fs::copy_file(kVectorDir + "llama3.tokenizer_config.json", model / "tokenizer_config.json");
  json config = json::parse(read_file(kVectorDir + "llama3.tokenizer_config.json"));
  config["bos_token"] = "<|start_header_id|>";
  write_file_atomic((data / "tokenizer_config.json").string(), config.dump());
  EXPECT_NE(tokenizer_fingerprint(data.string()), tokenizer_fingerprint(model.string()));
  EXPECT_NE(tokenizer_fingerprint(model.string()).find(", BOS "), std::string::npos);
  try {
    check_same_tokenizer(data.string(), model.string(), "train --init");
    ADD_FAILURE() << "another BOS passed as the model's tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("was made with another tokenizer"), std::string::npos)
        << e.what();
  }
  fs::copy_file(model / "tokenizer_config.json", data / "tokenizer_config.json",
                fs::copy_options::overwrite_existing);
  EXPECT_NO_THROW(check_same_tokenizer(data.string(), model.string(), "train --init"));
}

// generation_config.json's eos_token_id comes back as it was listed: transformers takes the first
// as the fallback pad_token_id, and the export put the tokenizer_config's EOS first.
TEST(HfTokenizer, SavedEosIdsKeepTheirOrder) {
  testing::TempDir tmp;
  const fs::path src = tmp.path() / "src", out = tmp.path() / "out";
  fs::create_directories(src);
  fs::create_directories(out);
  write_file_atomic((src / "tokenizer.json").string(),
                    read_file(kVectorDir + "sp_legacy.tokenizer.json"));
  write_file_atomic((src / "tokenizer_config.json").string(),
                    read_file(kVectorDir + "sp_legacy.tokenizer_config.json"));
  write_file_atomic((src / "generation_config.json").string(),
                    R"({"eos_token_id": [1, 2], "temperature": 0.6})");
  save_tokenizer_to_dir(src.string(), out.string());
  const nlohmann::json gen =
      nlohmann::json::parse(read_file((out / "generation_config.json").string()));
  EXPECT_EQ(gen["eos_token_id"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(gen["temperature"], 0.6);
  EXPECT_EQ(load_tokenizer(out.string())->eos_ids().size(), 2u);
  // Without a generation_config.json, config.json's list in its order (the tokenizer's EOS,
  // </s> = 2, comes first among the ids: [2, 1] was written).
  fs::remove(src / "generation_config.json");
  write_file_atomic((src / "config.json").string(), R"({"eos_token_id": [1, 2]})");
  fs::remove_all(out);
  fs::create_directories(out);
  save_tokenizer_to_dir(src.string(), out.string());
  EXPECT_EQ(
      nlohmann::json::parse(read_file((out / "generation_config.json").string()))["eos_token_id"],
      nlohmann::json::array({1, 2}));
}

// A command loads its tokenizer several times (the data's, a checkpoint's copy, fingerprints):
// files of the same contents share one build, wherever they lie. A file changed in place is
// built again, never answered from the earlier build.
TEST(HfTokenizer, SameFilesShareABuildAndChangedFilesDoNot) {
  testing::TempDir tmp;
  const fs::path a = tmp.path() / "a", b = tmp.path() / "b";
  for (const fs::path& d : {a, b}) {
    fs::create_directories(d);
    fs::copy_file(kVectorDir + "gpt2.tokenizer.json", d / "tokenizer.json");
    fs::copy_file(kVectorDir + "gpt2.tokenizer_config.json", d / "tokenizer_config.json");
  }
  // A checkpoint's config.json is the model's (no token ids): the same tokenizer.
  write_file_atomic((b / "config.json").string(), R"({"dim": 64, "n_layers": 2})");
  const size_t before = hf_tokenizer_builds();
  const auto first = load_tokenizer(a.string());
  const auto second = load_tokenizer(b.string());
  const std::string fingerprint = tokenizer_fingerprint(a.string());
  EXPECT_EQ(tokenizer_fingerprint(b.string()), fingerprint);
  EXPECT_EQ(hf_tokenizer_builds(), before + 1);
  const std::string text = "Hello world, it's 1234 cats";
  EXPECT_EQ(second->encode(text), first->encode(text));

  // "model" and "self" trade ids.
  json swapped = json::parse(read_file((b / "tokenizer.json").string()));
  json& vocab = swapped["model"]["vocab"];
  ASSERT_TRUE(vocab.contains("model") && vocab.contains("self"));
  const json model = vocab["model"];
  vocab["model"] = vocab["self"];
  vocab["self"] = model;
  write_file_atomic((b / "tokenizer.json").string(), swapped.dump());
  const auto rebuilt = load_tokenizer(b.string());
  EXPECT_EQ(hf_tokenizer_builds(), before + 2);
  EXPECT_EQ(rebuilt->encode("model"), first->encode("self"));
  EXPECT_EQ(rebuilt->encode("self"), first->encode("model"));
  EXPECT_EQ(first->encode("model").size(), 1u);
  EXPECT_NE(tokenizer_fingerprint(b.string()), fingerprint);
  // A companion changed (another EOS) is another tokenizer too, config.json's ids among them.
  write_file_atomic((b / "config.json").string(), R"({"dim": 64, "eos_token_id": 0})");
  EXPECT_TRUE(load_tokenizer(b.string())->is_eos(0));
  EXPECT_FALSE(first->is_eos(0));
  json config = json::parse(read_file((a / "tokenizer_config.json").string()));
  config["eos_token"] = "Hello";
  write_file_atomic((a / "tokenizer_config.json").string(), config.dump());
  EXPECT_EQ(load_tokenizer(a.string())->eos_id(), first->encode("Hello").at(0));
  EXPECT_EQ(first->eos_id(), second->eos_id());  // the earlier ones are unchanged
  EXPECT_NE(first->eos_id(), first->encode("Hello").at(0));
}

}  // namespace
}  // namespace chainlm
