// A user trial's mistakes with trained models (2026-12-05), which passed silently or failed
// late before: a --tokenizer that is not the model's (eval reported a perplexity of 2874 for
// 39, quantize wrote a checkpoint no command could use), and a GGUF export into a directory
// that does not exist (an error naming temporary files).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "workflow_fixture.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::quote;
using testing::run_chainlm;
using testing::write_bytes;

class ModelUseCli : public WorkflowSafety {
 protected:
  void SetUp() override {
    WorkflowSafety::SetUp();
    // Byte-level data (258 tokens) for a model of 512: room for a tokenizer of 300.
    write_bytes(config, R"({"dim": 32, "n_layers": 1, "n_heads": 2, "ffn_dim": 64, "vocab_size": 512,
                            "max_seq_len": 16})");
    run = dir.file("run");
    ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
    std::string text;
    for (int i = 0; i < 300; ++i) text += "another tokenizer for another model " + std::to_string(i) + "\n\n";
    write_bytes(dir.file("other.txt"), text);
    auto t = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("other.txt")) +
                                  " --vocab-size 300 --out " + quote(dir.file("t300.model")));
    ASSERT_EQ(t.exit_code, 0) << t.err;
  }
  std::string run;
};

TEST_F(ModelUseCli, ATokenizerOfAnotherVocabularyThanTheModelsIsRefused) {
  const std::string other = quote(dir.file("t300.model"));
  const std::string uses[] = {
      "eval ppl --model " + quote(run) + " --data " + quote(dir.file("corpus.txt")) + " --tokenizer " + other,
      "generate --model " + quote(run) + " --prompt hi --max-tokens 2 --tokenizer " + other,
      "quantize --model " + quote(run) + " --type q8_0 --out " + quote(dir.file("q")) + " --tokenizer " + other};
  for (const std::string& use : uses) {
    auto r = run_chainlm(dir, use);
    EXPECT_NE(r.exit_code, 0) << use;
    EXPECT_TRUE(contains(r.err, "has 300 tokens, but the tokenizer") && contains(r.err, "has 258") &&
                contains(r.err, "not the tokenizer this model was trained with"))
        << use << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.file("q")));
  // The model's own, named explicitly, is fine; so is leaving it out.
  auto own = run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(dir.file("corpus.txt")) +
                                 " --tokenizer byte");
  EXPECT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --out " + quote(dir.file("q"))).exit_code, 0);
}

TEST_F(ModelUseCli, AGgufExportMakesItsDirectoryAndNamesAFile) {
  const std::string out = dir.file("new/deeper/m.gguf");
  auto r = run_chainlm(dir, "export --format gguf --no-tokenizer --model " + quote(run) + " --out " + quote(out));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(out));
  auto d = run_chainlm(dir, "export --format gguf --no-tokenizer --model " + quote(run) + " --out " +
                                quote(dir.file("gdir") + "/"));
  EXPECT_NE(d.exit_code, 0);
  EXPECT_TRUE(contains(d.err, "names a directory") && contains(d.err, "model.gguf")) << d.err;
  EXPECT_FALSE(fs::exists(dir.file("gdir")));
}

}  // namespace
}  // namespace chainlm
