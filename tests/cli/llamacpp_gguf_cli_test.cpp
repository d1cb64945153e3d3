// GGUF files llama.cpp's own tool wrote from a chainlm GGUF (tests/vectors/llamacpp_gguf, made by
// llama-quantize --pure; make_vectors.sh there regenerates them). llama-quantize copies every
// metadata entry, chainlm's checksums among them, and adds its own after them: chainlm refused
// every such file as corrupt. They are the other tool's files now, read as any other tool's, and
// llama.cpp's Q8_0 blocks are the ones chainlm computes from the same weights.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/test_temp_dir.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;

const std::string kVectors = std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/llamacpp_gguf/";

std::vector<int> greedy_tokens(const TempDir& dir, const std::string& model) {
  const auto r = run_chainlm(dir, "generate --model " + quote(model) +
                                      " --prompt 'ROMEO: What' --max-tokens 12 --temperature 0 "
                                      "--threads 1 --json");
  EXPECT_EQ(r.exit_code, 0) << model << ": " << r.err;
  if (r.exit_code != 0) return {};
  return nlohmann::json::parse(r.out)["tokens"].get<std::vector<int>>();
}

TEST(LlamaCppGguf, ChainlmReadsWhatLlamaQuantizeWroteFromItsFiles) {
  TempDir dir;
  const std::string f32 = kVectors + "tiny-f32.gguf";
  const std::string theirs = kVectors + "tiny-q8_0.llamacpp.gguf", ours = dir.file("q8_0.gguf");
  {
    GgufReader r(theirs);  // chainlm's records, then llama.cpp's own entries after them
    EXPECT_TRUE(r.has(kGgufCrcKey) && r.has(kGgufMetadataCrcKey));
    EXPECT_FALSE(r.has_checksums());
  }
  auto r = run_chainlm(
      dir, "export --model " + quote(f32) + " --format gguf --type q8_0 --out " + quote(ours));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The same blocks, tensor by tensor: llama.cpp's Q8_0 rounding is chainlm's.
  GgufReader a(theirs), b(ours);
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  int q8_tensors = 0;
  for (const GgufTensorInfo& t : a.tensors()) {
    const GgufTensorInfo* u = b.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(t.type, u->type) << t.name;
    EXPECT_EQ(t.ne, u->ne) << t.name;
    ASSERT_EQ(t.bytes, u->bytes) << t.name;
    EXPECT_EQ(std::memcmp(a.data(t), b.data(*u), t.bytes), 0) << t.name << " differs";
    q8_tensors += t.type == kGgmlQ8_0;
  }
  EXPECT_GE(q8_tensors, 7);  // every matrix: embedding, output, q, k, v, o, and the three FFN ones
  const std::vector<int> tokens = greedy_tokens(dir, theirs);
  EXPECT_EQ(tokens.size(), 12u);
  EXPECT_EQ(tokens, greedy_tokens(dir, ours));
  // Q4_0 (chainlm's own q4_0 weighs its scales by the norms' gains, so its blocks differ): read
  // and run.
  EXPECT_EQ(greedy_tokens(dir, kVectors + "tiny-q4_0.llamacpp.gguf").size(), 12u);
}

}  // namespace
}  // namespace chainlm
