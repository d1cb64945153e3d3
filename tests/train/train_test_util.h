#pragma once
// Builds a data directory (train.bin, val.bin, tokenizer) for trainer tests.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/test_temp_dir.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"

namespace chainlm::test {

// `lines` lines of `sentence` followed by the line's number: a small corpus a test model learns.
inline std::string numbered_lines(const std::string& sentence, int lines) {
  std::string text;
  for (int i = 0; i < lines; ++i) text += sentence + std::to_string(i) + "\n";
  return text;
}

// Creates dir (a data directory, as chainlm prepare writes it) with text byte-tokenized: the
// first (1 - val_fraction) of it for training, the rest validation.
inline void make_byte_data_dir(const std::string& text, const std::string& dir, double val_fraction) {
  std::filesystem::create_directories(dir);
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

// A test with a temporary directory and a data directory in it (dir/data), made by make_data:
// `lines` numbered lines of `sentence`, byte-tokenized, a fifth of them for validation.
class TrainingDataTest : public ::testing::Test {
 protected:
  void make_data(int lines, const std::string& sentence) {
    data = dir.file("data");
    make_byte_data_dir(numbered_lines(sentence, lines), data, 0.2);
  }
  testing::TempDir dir;
  std::string data;
};

// The lines of a run's metrics.jsonl, parsed.
inline std::vector<nlohmann::json> read_metrics_lines(const std::string& run_dir) {
  std::ifstream in(std::filesystem::path(run_dir) / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace chainlm::test
