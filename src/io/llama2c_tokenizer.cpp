// llama2.c tokenizer.bin: a Tokenizer that encodes and decodes exactly as run.c does.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/llama2c.h"

namespace chainlm {
namespace {

// Larger files are not tokenizer.bin vocabularies (LLaMA 2's 32000 pieces take ~430 KB).
constexpr std::uintmax_t kMaxTokenizerBytes = 256u << 20;
constexpr int kBos = 1, kEos = 2;
constexpr int kByteOffset = 3;  // byte-fallback token of byte b is b + 3 (after unk, bos, eos)

struct Vocab {
  int max_token_length = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

// Parses bytes as a tokenizer.bin; returns "" or what is wrong.
std::string parse_vocab(const std::string& bytes, Vocab& v) {
  const size_t n = bytes.size();
  if (n < 4) return cat("truncated: ", n, " bytes, too short for the max_token_length field");
  int32_t max_len;
  std::memcpy(&max_len, bytes.data(), 4);
  if (max_len < 1 || max_len > (1 << 20))
    return cat("max_token_length ", max_len, " is outside 1..1048576");
  v.max_token_length = max_len;
  size_t pos = 4;
  while (pos < n) {
    const size_t id = v.pieces.size();
    if (n - pos < 8)
      return cat("truncated: token ", id, " at byte ", pos, " needs an 8-byte score and length, ",
                 n - pos, " bytes left");
    float score;
    int32_t len;
    std::memcpy(&score, bytes.data() + pos, 4);
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    if (!std::isfinite(score))
      return cat("token ", id, " at byte ", pos, " has a non-finite score");
    if (len < 0 || len > max_len)
      return cat("token ", id, " at byte ", pos, " has length ", len,
                 ", outside 0..max_token_length (", max_len, ")");
    pos += 8;
    if (n - pos < static_cast<size_t>(len))
      return cat("truncated: token ", id, " needs ", len, " bytes, ", n - pos, " left");
    v.pieces.emplace_back(bytes.data() + pos, static_cast<size_t>(len));
    v.scores.push_back(score);
    pos += static_cast<size_t>(len);
  }
  if (v.pieces.size() < 3)
    return cat("only ", v.pieces.size(), " tokens; ids 0, 1, 2 (unk, BOS, EOS) must exist");
  return "";
}

// "<0xXX>" -> XX, else -1 (run.c's sscanf(piece, "<0x%02hhX>") on SentencePiece byte pieces).
int byte_piece_value(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(const std::string& path, Vocab vocab) : path_(path), v_(std::move(vocab)) {
    // run.c binary-searches a sorted copy; with duplicate pieces (none in real files) the
    // lowest id wins here.
    for (int i = 0; i < (int)v_.pieces.size(); ++i) ids_.emplace(v_.pieces[i], i);
    for (int i = 0; i < (int)v_.pieces.size(); ++i)
      byte_of_.push_back(byte_piece_value(v_.pieces[i]));
  }

  // run.c's encode(t, text, bos=0, eos=0, ...): dummy prefix " ", UTF-8 codepoints looked up
  // whole (byte fallback otherwise), then repeatedly merge the adjacent pair whose
  // concatenation is the best-scoring vocabulary piece (leftmost on ties). run.c rescans all
  // pairs per merge (quadratic); a heap over the same candidates, ordered by (score, position),
  // makes the same choice at every step.
  std::vector<int> encode(const std::string& text) const override {
    std::vector<int> tokens;
    if (text.empty()) return tokens;
    tokens.reserve(text.size() + 1);
    const int space = lookup(" ");
    if (space >= 0) {
      tokens.push_back(space);
    } else {
      push_bytes(" ", tokens);  // run.c would emit id -1 here; byte fallback is its intent
    }
    std::string buf;
    for (size_t i = 0; i < text.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      if ((c & 0xC0) != 0x80) buf.clear();  // ASCII or a leading byte starts a codepoint
      buf += static_cast<char>(c);
      const bool next_is_continuation =
          i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
      if (next_is_continuation && buf.size() < 4) continue;
      const int id = lookup(buf);
      if (id >= 0) {
        tokens.push_back(id);
      } else {
        push_bytes(buf, tokens);
      }
      buf.clear();
    }
    merge(tokens);
    return tokens;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string text;
    int prev = kBos;  // the text starts as if after BOS: SentencePiece drops the dummy prefix
    for (int id : ids) {
      text += decode_token(prev, id);
      prev = id;
    }
    return text;
  }

  // run.c's decode, except that BOS and EOS carry no text (run.c's pieces for them are
  // "\n<s>\n" and "\n</s>\n").
  std::string decode_token(int prev_id, int id) const override {
    check_id(id);
    if (id == kBos || id == kEos) return "";
    if (byte_of_[id] >= 0) return std::string(1, static_cast<char>(byte_of_[id]));
    const std::string& piece = v_.pieces[id];
    if (prev_id == kBos && !piece.empty() && piece[0] == ' ') return piece.substr(1);
    return piece;
  }

  int vocab_size() const override { return static_cast<int>(v_.pieces.size()); }
  int bos_id() const override { return kBos; }
  int eos_id() const override { return kEos; }
  std::string kind() const override { return "llama2c"; }

 private:
  int lookup(const std::string& s) const {
    auto it = ids_.find(s);
    return it == ids_.end() ? -1 : it->second;
  }

  void push_bytes(const std::string& s, std::vector<int>& tokens) const {
    for (unsigned char b : s) {
      const int id = b + kByteOffset;
      CHAINLM_CHECK(id < vocab_size(), path_, ": cannot encode byte 0x", std::hex, (int)b, std::dec,
                    ": it is not in the vocabulary and byte fallback needs id ", id,
                    " but the vocabulary has ", vocab_size(), " tokens");
      tokens.push_back(id);
    }
  }

  struct Node {
    int id, prev, next, version;
  };
  struct Candidate {
    float score;
    int left, right, left_version, right_version, merged;
    // Highest score first; on equal scores the leftmost pair (run.c's strict '>' scan).
    bool operator<(const Candidate& o) const {
      return score < o.score || (score == o.score && left > o.left);
    }
  };

  void merge(std::vector<int>& tokens) const {
    const int n = static_cast<int>(tokens.size());
    if (n < 2) return;
    std::vector<Node> nodes(n);
    for (int i = 0; i < n; ++i) nodes[i] = {tokens[i], i - 1, i + 1 < n ? i + 1 : -1, 0};
    std::priority_queue<Candidate> heap;
    std::string pair;
    auto consider = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      pair = v_.pieces[nodes[left].id];
      pair += v_.pieces[nodes[right].id];
      const int id = lookup(pair);
      // run.c starts its scan at best_score = -1e10: pairs scoring lower never merge.
      if (id < 0 || !(v_.scores[id] > -1e10f)) return;
      heap.push({v_.scores[id], left, right, nodes[left].version, nodes[right].version, id});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i, i + 1);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Node& l = nodes[c.left];
      if (l.version != c.left_version || l.next != c.right) continue;
      Node& r = nodes[c.right];
      if (r.version != c.right_version) continue;
      l.id = c.merged;
      ++l.version;
      l.next = r.next;
      if (r.next >= 0) nodes[r.next].prev = c.left;
      r.version = -1;  // dead
      consider(l.prev, c.left);
      consider(c.left, l.next);
    }
    tokens.clear();
    for (int i = 0; i >= 0; i = nodes[i].next) tokens.push_back(nodes[i].id);
  }

  void check_id(int id) const {
    CHAINLM_CHECK(id >= 0 && id < vocab_size(), path_, ": token id ", id,
                  " is outside the vocabulary (0..", vocab_size() - 1, ")");
  }

  std::string path_;
  Vocab v_;
  std::unordered_map<std::string, int> ids_;
  std::vector<int> byte_of_;  // byte value of "<0xXX>" pieces, else -1
};

}  // namespace

bool is_llama2c_tokenizer(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxTokenizerBytes) return false;
  try {
    Vocab v;
    return parse_vocab(read_file(path), v).empty();
  } catch (const Error&) {
    return false;
  }
}

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path) {
  std::error_code ec;
  CHAINLM_CHECK(std::filesystem::is_regular_file(path, ec), path,
                ": not a regular file (expected a llama2.c tokenizer.bin)");
  const auto size = std::filesystem::file_size(path, ec);
  CHAINLM_CHECK(!ec && size <= kMaxTokenizerBytes, path, ": not a llama2.c tokenizer.bin: ", size,
                " bytes is far larger than any vocabulary");
  Vocab v;
  const std::string problem = parse_vocab(read_file(path), v);
  CHAINLM_CHECK(problem.empty(), path, ": not a llama2.c tokenizer.bin: ", problem);
  return std::make_unique<Llama2cTokenizer>(path, std::move(v));
}

}  // namespace chainlm
