#pragma once
// Builds a data directory (train.bin, val.bin, tokenizer) for trainer tests.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "io/token_shard.h"
#include "io/tokenizer.h"

namespace chainlm::test {

inline std::string make_temp_dir(const std::string& tag) {
  namespace fs = std::filesystem;
  fs::path p = fs::temp_directory_path() /
               ("chainlm-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rand()));
  fs::create_directories(p);
  return p.string();
}

// Byte-tokenizes text: the first (1 - val_fraction) of it for training, the rest validation.
inline void make_byte_data_dir(const std::string& text, const std::string& dir, double val_fraction) {
  ByteTokenizer tok;
  const size_t cut = (size_t)(text.size() * (1.0 - val_fraction));
  auto encode = [&](const std::string& s) {
    std::vector<uint32_t> ids{(uint32_t)tok.bos_id()};
    for (int t : tok.encode(s)) ids.push_back((uint32_t)t);
    return ids;
  };
  write_token_shard(dir + "/train.bin", encode(text.substr(0, cut)), tok.vocab_size());
  write_token_shard(dir + "/val.bin", encode(text.substr(cut)), tok.vocab_size());
  save_tokenizer_to_dir("byte", dir);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace chainlm::test
