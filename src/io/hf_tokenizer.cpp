#include "io/hf_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/hf_bpe.h"
#include "io/hf_pipeline.h"
#include "io/hf_regex.h"
#include "io/text_encoding.h"

namespace chainlm {
namespace fs = std::filesystem;

namespace {

using json = nlohmann::json;

struct AddedToken {
  int id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A stretch of input: an added token (id >= 0) or text for the normalizer and model.
struct Segment {
  size_t offset;
  std::string_view text;
  int id;
};

// What single_word tokens must not touch: tokenizers' added_vocabulary.rs asks Rust's regex
// `\w`, whose Unicode class is letters (Alphabetic), marks, decimal digits, connector
// punctuation and the joiners U+200C/U+200D (not other numbers such as "²").
const HfRegex& word_char() {
  static const HfRegex re("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]", "the word-character class");
  return re;
}

size_t last_char_start(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  return i > 0 ? i - 1 : 0;
}

// Finds added tokens in text as tokenizers' AddedVocabulary does: leftmost-longest matches
// over all their contents, then single_word, lstrip and rstrip applied to each match.
class AddedMatcher {
 public:
  void add(const AddedToken& t, std::string pattern) {
    if (pattern.empty()) return;
    by_first_byte_[static_cast<unsigned char>(pattern[0])].push_back(tokens_.size());
    tokens_.push_back({t, std::move(pattern)});
  }

  std::vector<Segment> split(std::string_view text, size_t base_offset) const {
    std::vector<Segment> out;
    if (tokens_.empty()) {
      out.push_back({base_offset, text, -1});
      return out;
    }
    size_t done = 0;  // text before this is emitted
    for (size_t i = 0; i < text.size();) {
      const Entry* best = nullptr;
      for (size_t k : by_first_byte_[static_cast<unsigned char>(text[i])]) {
        const Entry& e = tokens_[k];
        if (text.compare(i, e.pattern.size(), e.pattern) == 0 && (!best || e.pattern.size() > best->pattern.size()))
          best = &e;
      }
      if (!best) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + best->pattern.size();
      const AddedToken& t = best->token;
      if (t.single_word) {
        const bool start_ok = start == 0 || !word_char().matches_at_start(text.substr(last_char_start(text.substr(0, start))));
        const bool stop_ok = stop == text.size() || !word_char().matches_at_start(text.substr(stop));
        if (!start_ok || !stop_ok) {
          i = stop;  // the leftmost-longest iterator resumes after a discarded match too
          continue;
        }
      }
      if (t.lstrip) {
        size_t s = start;
        while (s > done) {
          const size_t c = last_char_start(text.substr(0, s));
          if (!unicode_whitespace().matches_at_start(text.substr(c, s - c))) break;
          s = c;
        }
        start = s;
      }
      if (t.rstrip)
        while (stop < text.size()) {
          const size_t len = utf8_char_length(static_cast<unsigned char>(text[stop]));
          if (!unicode_whitespace().matches_at_start(text.substr(stop, len))) break;
          stop += len;
        }
      if (done < start) out.push_back({base_offset + done, text.substr(done, start - done), -1});
      out.push_back({base_offset + start, text.substr(start, stop - start), t.id});
      done = stop;
      i = stop;
    }
    if (done < text.size() || out.empty()) out.push_back({base_offset + done, text.substr(done), -1});
    return out;
  }

 private:
  struct Entry {
    AddedToken token;
    std::string pattern;
  };
  std::vector<Entry> tokens_;
  std::vector<size_t> by_first_byte_[256];
};

std::string token_content(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "";
  if (j[key].is_string()) return j[key].get<std::string>();
  if (j[key].is_object() && j[key].contains("content") && j[key]["content"].is_string())
    return j[key]["content"].get<std::string>();
  return "";
}

// bos_token_id / eos_token_id: an integer or a list of integers.
std::vector<int> token_ids(const json& j, const char* key, const std::string& where) {
  std::vector<int> ids;
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return ids;
  const json& v = j[key];
  // Read whole: get<int>() of 2^40 wrapped into some id.
  auto id_of = [&](const json& e) {
    CHAINLM_CHECK(e.is_number_integer() && (e.is_number_unsigned() ? e.get<uint64_t>() < (1u << 30)
                                                                   : e.get<int64_t>() >= -1),
                  where, ": '", key, "' must be an integer id or a list of them (got ",
                  e.dump().substr(0, 40), ")");
    return e.get<int>();
  };
  if (v.is_number_integer()) {
    ids.push_back(id_of(v));
  } else {
    CHAINLM_CHECK(v.is_array(), where, ": '", key, "' must be an integer or a list of integers");
    for (const json& e : v) ids.push_back(id_of(e));
  }
  return ids;
}

// How deep a JSON value nests, walked without recursion. Copying (json::value) or walking a
// value recursively overflowed the stack at 100,000 levels (SIGSEGV on a crafted tokenizer.json);
// the files a tokenizer comes with nest a few levels.
constexpr int kMaxJsonDepth = 128;

int json_depth(const json& root) {
  int deepest = 0;
  std::vector<std::pair<const json*, int>> stack = {{&root, 1}};
  while (!stack.empty()) {
    const auto [j, depth] = stack.back();
    stack.pop_back();
    deepest = std::max(deepest, depth);
    if (deepest > kMaxJsonDepth) break;
    if (j->is_structured())
      for (const json& child : *j) stack.emplace_back(&child, depth + 1);
  }
  return deepest;
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    json j = json::parse(text);
    CHAINLM_CHECK(json_depth(j) <= kMaxJsonDepth, where, ": nests deeper than ", kMaxJsonDepth,
                  " levels; a tokenizer's files nest a few");
    return j;
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON (", e.what(), ")");
  }
}

class HfTokenizer final : public Tokenizer {
 public:
  explicit HfTokenizer(const HfTokenizerFiles& files);

  std::vector<int> encode(const std::string& text) const override {
    return encode_from(text, true);
  }
  std::vector<int> encode_continuation(const std::string& text) const override {
    return encode_from(text, false);
  }
  std::string decode(const std::vector<int>& ids) const override;
  std::string decode_token(int prev_id, int id) const override;
  int vocab_size() const override { return vocab_size_; }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_.front(); }
  bool is_eos(int id) const override { return std::find(eos_.begin(), eos_.end(), id) != eos_.end(); }
  std::string kind() const override { return "hf"; }
  std::vector<int> eos_ids() const override { return eos_; }
  const std::string& token_text(int id) const { return id_to_token_.at(id); }

 private:
  void encode_text(std::string_view text, bool at_start, std::vector<int>& out) const;
  // at_start: whether text begins the input (else it continues one).
  std::vector<int> encode_from(const std::string& text, bool at_start) const;
  bool hidden(int id) const { return special_.count(id) || id == bos_ || is_eos(id); }
  // The token strings the decoder sees: hidden tokens and unassigned ids left out.
  std::vector<std::string> tokens_of(const std::vector<int>& ids) const;
  int id_of(const std::string& content) const;

  std::string where_;
  std::unique_ptr<HfNormalizer> normalizer_;
  std::unique_ptr<HfPreTokenizer> pre_tokenizer_;
  std::unique_ptr<HfBpe> model_;
  std::unique_ptr<HfDecoder> decoder_;
  AddedMatcher raw_added_, normalized_added_;
  std::vector<std::string> id_to_token_;
  std::vector<char> assigned_;
  std::set<int> special_;
  std::unordered_map<std::string, int> added_by_content_;
  int vocab_size_ = 0, bos_ = -1;
  int context_id_ = -1;  // a visible token whose text starts with none of the decoders' spaces
  std::vector<int> eos_;
};

HfTokenizer::HfTokenizer(const HfTokenizerFiles& files) : where_(files.where) {
  const json j = parse_json(files.tokenizer_json, where_);
  CHAINLM_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), where_,
                ": not a Hugging Face tokenizer.json (no \"model\" object)");
  const json& model = j["model"];
  // Files written by older tokenizers versions leave out "type" for BPE (it was the default).
  const std::string type = model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>()
                                                                                 : (model.contains("merges") ? "BPE" : "");
  CHAINLM_CHECK(type == "BPE", where_, ": the tokenizer model is '", type.empty() ? "(no type)" : type,
                "'; chainlm reads BPE models (WordPiece, WordLevel and Unigram are not supported)");
  model_ = std::make_unique<HfBpe>(model, where_);
  normalizer_ = std::make_unique<HfNormalizer>(j.value("normalizer", json()), where_);
  pre_tokenizer_ = std::make_unique<HfPreTokenizer>(j.value("pre_tokenizer", json()), where_);
  decoder_ = std::make_unique<HfDecoder>(j.value("decoder", json()), where_);

  // tokenizers knows format "1.0" (or none); another may mean anything.
  if (j.contains("version") && !j["version"].is_null())
    CHAINLM_CHECK(j["version"].is_string() && j["version"].get<std::string>() == "1.0", where_,
                  ": tokenizer.json version ", j["version"].dump(),
                  " is not one tokenizers knows (it reads \"1.0\")");
  for (const auto& [token, id] : model_->vocab()) vocab_size_ = std::max(vocab_size_, id + 1);
  std::vector<AddedToken> added;
  // tokenizers ignores an added token's id when it loads a file: it takes the model's id for a
  // token the vocabulary has, the id given earlier to the same content, else the next id after
  // the vocabulary and the tokens added before (warning only in its log). A file whose ids
  // differ from that (two tokens on one id, an added "ello" beside the vocabulary's) tokenized
  // differently here, nothing said: such ids are refused, naming the one tokenizers uses.
  int next_added = (int)model_->vocab().size(), max_added = -1;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    CHAINLM_CHECK(j["added_tokens"].is_array(), where_, ": added_tokens must be an array");
    for (const json& a : j["added_tokens"]) {
      CHAINLM_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_unsigned() && a.contains("content") &&
                        a["content"].is_string(),
                    where_, ": an added token needs an 'id' and a 'content': ", a.dump().substr(0, 200));
      for (const char* k : {"single_word", "lstrip", "rstrip", "normalized", "special"})
        CHAINLM_CHECK(a.contains(k) && a[k].is_boolean(), where_, ": added token ",
                      a["content"].dump(), a.contains(k) ? " has a '" : " has no '", k,
                      a.contains(k) ? "' that is not true or false"
                                    : "' (tokenizers requires each of "
                                      "single_word, lstrip, rstrip, "
                                      "normalized and special)");
      AddedToken t;
      // Checked as read: get<int>() of 2^31 went negative (an index before the table, SIGSEGV)
      // and of 2^32 + 5 became 5.
      const uint64_t id = a["id"].get<uint64_t>();
      CHAINLM_CHECK(id < (1u << 30), where_, ": added token id ", id, " is too large");
      t.id = (int)id;
      t.content = a["content"].get<std::string>();
      auto flag = [&](const char* k) { return a.contains(k) && a[k].is_boolean() && a[k].get<bool>(); };
      t.single_word = flag("single_word");
      t.lstrip = flag("lstrip");
      t.rstrip = flag("rstrip");
      t.normalized = flag("normalized");
      t.special = flag("special");
      CHAINLM_CHECK(check_utf8(t.content).ok() && !t.content.empty(), where_, ": added token ", t.id,
                    " has empty or invalid UTF-8 content");
      int expected = model_->id_of(t.content);
      const char* why = "the model's vocabulary holds it under that id";
      if (expected < 0 && added_by_content_.count(t.content)) {
        expected = added_by_content_[t.content];
        why = "an earlier added token has the same content";
      } else if (expected < 0) {
        expected = std::max(next_added, max_added + 1);
        why = "it is the next id after the vocabulary and the tokens added before it";
      }
      CHAINLM_CHECK(t.id == expected, where_, ": added token ", a["content"].dump(), " has id ",
                    t.id, " but Hugging Face tokenizers gives it id ", expected, " (", why,
                    "): the file's ids are inconsistent, and tokens would differ");
      added_by_content_[t.content] = expected;
      max_added = std::max(max_added, expected);
      vocab_size_ = std::max(vocab_size_, t.id + 1);
      added.push_back(t);
    }
  }
  CHAINLM_CHECK(vocab_size_ > 0, where_, ": the vocabulary is empty");
  // Ids run 0..N-1 with few gaps in real tokenizers: one id of 300,000,000 among 512 tokens
  // made tables of that many entries (10 GB, std::bad_alloc naming no file).
  const size_t tokens = model_->vocab().size() + added.size();
  CHAINLM_CHECK((size_t)vocab_size_ <= 2 * tokens + 1024, where_, ": its ids run up to ",
                vocab_size_ - 1, " for ", tokens,
                " tokens; a tokenizer's ids are (nearly) contiguous");
  id_to_token_.assign(vocab_size_, "");
  assigned_.assign(vocab_size_, 0);
  for (const auto& [token, id] : model_->vocab()) {
    id_to_token_[id] = token;
    assigned_[id] = 1;
  }
  for (const AddedToken& t : added) {
    id_to_token_[t.id] = t.content;
    assigned_[t.id] = 1;
    if (t.special) special_.insert(t.id);
    if (t.normalized && !normalizer_->empty())
      normalized_added_.add(t, normalizer_->normalize(t.content));
    else if (t.normalized)
      normalized_added_.add(t, t.content);
    else
      raw_added_.add(t, t.content);
  }

  // BOS and EOS: tokenizer_config.json's tokens, then config.json's and generation_config.json's
  // ids (LLaMA-3 instruct lists several EOS ids there), then the names the families use.
  std::vector<int> bos, eos;
  auto add_named = [&](std::vector<int>& into, const std::string& content, const std::string& file) {
    if (content.empty()) return;
    const int id = id_of(content);
    CHAINLM_CHECK(id >= 0, file, ": token '", content, "' is not in the vocabulary of ", where_);
    into.push_back(id);
  };
  const std::string dir = fs::path(where_).parent_path().string();
  if (!files.tokenizer_config.empty()) {
    const std::string f = (fs::path(dir) / "tokenizer_config.json").string();
    const json c = parse_json(files.tokenizer_config, f);
    add_named(bos, token_content(c, "bos_token"), f);
    add_named(eos, token_content(c, "eos_token"), f);
  }
  for (const auto& [text, name] : {std::pair{&files.model_config, "config.json"},
                                   std::pair{&files.generation_config, "generation_config.json"}}) {
    if (text->empty()) continue;
    const std::string f = (fs::path(dir) / name).string();
    const json c = parse_json(*text, f);
    // An id this vocabulary lacks is named with the file it came from (the message named
    // tokenizer.json, which had nothing to do with it).
    auto in_vocabulary = [&](int id, const char* key) {
      CHAINLM_CHECK(id >= 0 && id < vocab_size_, f, ": ", key, " ", id,
                    " is outside the vocabulary of ", where_, " (", vocab_size_, " ids)");
      return id;
    };
    for (int id : token_ids(c, "bos_token_id", f))
      if (bos.empty()) bos.push_back(in_vocabulary(id, "bos_token_id"));
    for (int id : token_ids(c, "eos_token_id", f)) eos.push_back(in_vocabulary(id, "eos_token_id"));
  }
  for (const char* name : {"<|begin_of_text|>", "<s>", "<|endoftext|>"})
    if (bos.empty() && id_of(name) >= 0) bos.push_back(id_of(name));
  for (const char* name : {"<|end_of_text|>", "</s>", "<|endoftext|>"})
    if (eos.empty() && id_of(name) >= 0) eos.push_back(id_of(name));
  CHAINLM_CHECK(!eos.empty(), where_, ": cannot tell the end-of-text token: put a tokenizer_config.json with ",
                "\"eos_token\" beside it");
  if (bos.empty()) bos.push_back(eos.front());  // GPT-2's convention: one token for both
  bos_ = bos.front();
  for (int id : eos)
    if (!is_eos(id)) eos_.push_back(id);
  for (int id : eos_)
    CHAINLM_CHECK(id >= 0 && id < vocab_size_, where_, ": EOS id ", id, " is outside the vocabulary (", vocab_size_, ")");
  CHAINLM_CHECK(bos_ >= 0 && bos_ < vocab_size_, where_, ": BOS id ", bos_, " is outside the vocabulary (", vocab_size_, ")");
  for (const char* letter : {"a", "e", "x", "0"})
    if (context_id_ < 0 && id_of(letter) >= 0 && !hidden(id_of(letter))) context_id_ = id_of(letter);
  // A normalizer that grows text past its bounds fails when a text is normalized: with a prompt,
  // a server found out at its first request (an HTTP 500). Ordinary text is normalized now.
  std::string probe;
  for (char ch = ' '; ch <= '~'; ++ch) probe += ch;
  try {
    normalizer_->normalize(probe + "\n" + probe);
  } catch (const Error& e) {
    fail(e.what(), " (found normalizing ordinary text as the tokenizer was read)");
  }
}

int HfTokenizer::id_of(const std::string& content) const {
  const auto a = added_by_content_.find(content);
  if (a != added_by_content_.end()) return a->second;
  const auto v = model_->vocab().find(content);
  return v == model_->vocab().end() ? -1 : v->second;
}

void HfTokenizer::encode_text(std::string_view text, bool at_start, std::vector<int>& out) const {
  bool start_moved = false;  // " Hello" stripped to "Hello" starts at input offset 1
  const std::string normalized = normalizer_->normalize(std::string(text), &start_moved);
  for (const Segment& s : normalized_added_.split(normalized, 0)) {
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    for (const HfPiece& p :
         pre_tokenizer_->split({std::string(s.text), at_start && !start_moved && s.offset == 0}))
      model_->tokenize(p.text, out);
  }
}

std::vector<int> HfTokenizer::encode_from(const std::string& text, bool at_start) const {
  // tokenizers takes Rust strings: invalid bytes become U+FFFD as from_utf8_lossy makes them.
  const std::string valid = check_utf8(text).ok() ? text : replace_invalid_utf8(text);
  std::vector<int> out;
  for (const Segment& s : raw_added_.split(valid, 0)) {
    if (s.id >= 0)
      out.push_back(s.id);
    else
      encode_text(s.text, at_start && s.offset == 0, out);
  }
  return out;
}

std::vector<std::string> HfTokenizer::tokens_of(const std::vector<int>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int id : ids) {
    CHAINLM_CHECK(id >= 0 && id < vocab_size_, "token id ", id, " is outside the vocabulary (", vocab_size_, " ids)");
    if (assigned_[id] && !hidden(id)) tokens.push_back(id_to_token_[id]);
  }
  return tokens;
}

std::string HfTokenizer::decode(const std::vector<int>& ids) const { return decoder_->decode(tokens_of(ids), true); }

std::string HfTokenizer::decode_token(int prev_id, int id) const {
  const std::vector<std::string> one = tokens_of({id});
  if (one.empty()) return "";
  const std::string alone = decoder_->decode(one, false);
  // After BOS (or at no token) a text starts: decoders such as Strip and Metaspace drop the
  // first token's leading space there.
  if (prev_id < 0 || prev_id >= vocab_size_ || prev_id == bos_) return alone;
  // Elsewhere the token's text is what it adds to a predecessor's; a hidden predecessor (EOS,
  // <unk>, another special token) decodes to nothing, so a plain stand-in takes its place.
  const bool prev_text = assigned_[prev_id] && !hidden(prev_id);
  if (!prev_text && context_id_ < 0) return alone;
  const std::string& before_token = id_to_token_[prev_text ? prev_id : context_id_];
  const std::string before = decoder_->decode({before_token}, false);
  const std::string both = decoder_->decode({before_token, one.front()}, false);
  return both.compare(0, before.size(), before) == 0 ? both.substr(before.size()) : alone;
}

std::string read_optional(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) ? read_file(p.string()) : std::string();
}

}  // namespace

HfTokenizerFiles read_hf_tokenizer_files(const std::string& path) {
  HfTokenizerFiles f;
  f.where = path;
  f.tokenizer_json = read_file(path);
  const fs::path dir = fs::path(path).parent_path();
  f.tokenizer_config = read_optional(dir / "tokenizer_config.json");
  f.model_config = read_optional(dir / "config.json");
  f.generation_config = read_optional(dir / "generation_config.json");
  // A chainlm checkpoint's config.json is chainlm's own (no token ids): harmless to read.
  return f;
}

namespace {

// One command loads a tokenizer several times: checks that the data's and a checkpoint's are
// the same, their fingerprints, the copy a checkpoint carries, the one it runs with. Building a
// 128K-token tokenizer.json takes about a second (parsing and the merges' table), so a resumed
// run spent ~6 s in six identical builds. Tokenizers are immutable once built, and a build
// depends only on the files' contents (errors only arise while building, and a cached one
// built without any), so one built from the same four texts is shared.
std::atomic<size_t> builds{0};

std::shared_ptr<const HfTokenizer> built_hf_tokenizer(const HfTokenizerFiles& files) {
  struct Built {
    HfTokenizerFiles files;
    std::shared_ptr<const HfTokenizer> tokenizer;
  };
  static std::mutex mutex;
  static std::deque<Built> recent;  // the last few: a command reads one or two tokenizers
  // Of config.json the build reads two keys: a chainlm checkpoint's own config.json (the
  // model's shapes) beside a copy of the data's tokenizer is the same tokenizer.
  auto ids_of_config = [](const std::string& text) {
    try {
      const json c = parse_json(text, "config.json");
      if (!c.is_object()) return text;
      json ids = json::object();
      for (const char* key : {"bos_token_id", "eos_token_id"})
        if (c.contains(key)) ids[key] = c[key];
      return ids.empty() ? std::string() : ids.dump();
    } catch (const Error&) {
      return text;  // the build names what is wrong with it
    }
  };
  const std::string config_ids =
      files.model_config.empty() ? "" : ids_of_config(files.model_config);
  auto same = [&](const HfTokenizerFiles& f) {
    return f.tokenizer_json == files.tokenizer_json &&
           f.tokenizer_config == files.tokenizer_config && f.model_config == config_ids &&
           f.generation_config == files.generation_config;
  };
  {
    const std::lock_guard<std::mutex> lock(mutex);
    for (const Built& b : recent)
      if (same(b.files)) return b.tokenizer;
  }
  auto built = std::make_shared<const HfTokenizer>(files);  // outside the lock: it takes a while
  const std::lock_guard<std::mutex> lock(mutex);
  ++builds;
  HfTokenizerFiles key = files;
  key.model_config = config_ids;
  recent.push_front({std::move(key), built});
  if (recent.size() > 2) recent.pop_back();
  return built;
}

// What load_tokenizer hands out: a Tokenizer of its own over a shared build.
class SharedHfTokenizer final : public Tokenizer {
 public:
  explicit SharedHfTokenizer(std::shared_ptr<const HfTokenizer> t) : t_(std::move(t)) {}
  std::vector<int> encode(const std::string& text) const override { return t_->encode(text); }
  std::vector<int> encode_continuation(const std::string& text) const override {
    return t_->encode_continuation(text);
  }
  std::string decode(const std::vector<int>& ids) const override { return t_->decode(ids); }
  std::string decode_token(int prev_id, int id) const override {
    return t_->decode_token(prev_id, id);
  }
  int vocab_size() const override { return t_->vocab_size(); }
  int bos_id() const override { return t_->bos_id(); }
  int eos_id() const override { return t_->eos_id(); }
  bool is_eos(int id) const override { return t_->is_eos(id); }
  std::vector<int> eos_ids() const override { return t_->eos_ids(); }
  std::string kind() const override { return t_->kind(); }

 private:
  std::shared_ptr<const HfTokenizer> t_;
};

}  // namespace

std::unique_ptr<Tokenizer> hf_tokenizer_from_files(const HfTokenizerFiles& files) {
  return std::make_unique<SharedHfTokenizer>(built_hf_tokenizer(files));
}

size_t hf_tokenizer_builds() {
  return builds;
}

void save_hf_tokenizer_files(const HfTokenizerFiles& files, const std::string& dir) {
  const std::shared_ptr<const HfTokenizer> built = built_hf_tokenizer(files);  // never write
  const HfTokenizer& tok = *built;  // what cannot be read back
  write_file_atomic((fs::path(dir) / "tokenizer.json").string(), files.tokenizer_json);
  // Without a tokenizer_config.json the BOS and EOS were found by name or id: write them down.
  const std::string config = files.tokenizer_config.empty()
                                 ? json{{"bos_token", tok.token_text(tok.bos_id())},
                                        {"eos_token", tok.token_text(tok.eos_id())}}.dump(1) + "\n"
                                 : files.tokenizer_config;
  write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), config);
  json gen = files.generation_config.empty() ? json::object() : parse_json(files.generation_config, dir);
  gen["bos_token_id"] = tok.bos_id();
  // The ids as the file listed them when they are the same ones: transformers takes the first
  // as the fallback pad_token_id.
  const std::vector<int> eos = tok.eos_ids();
  auto same_ids = [&](const json& listed) {
    std::vector<int> ids, ours = eos;
    for (const json& id : listed.is_array() ? listed : json::array({listed})) {
      if (!id.is_number_integer()) return false;
      ids.push_back(id.get<int>());
    }
    std::sort(ids.begin(), ids.end());
    std::sort(ours.begin(), ours.end());
    return ids == ours;
  };
  if (!gen.contains("eos_token_id") || !same_ids(gen["eos_token_id"])) {
    gen["eos_token_id"] = eos.size() == 1 ? json(eos.front()) : json(eos);
    // Without a generation_config.json, transformers takes config.json's list as it is.
    if (!files.model_config.empty()) {
      const json model = json::parse(files.model_config, nullptr, false);
      if (model.is_object() && model.contains("eos_token_id") && same_ids(model["eos_token_id"]))
        gen["eos_token_id"] = model["eos_token_id"];
    }
  }
  write_file_atomic((fs::path(dir) / "generation_config.json").string(), gen.dump(1) + "\n");
}

}  // namespace chainlm
