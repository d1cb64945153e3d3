// The workflow issue 18 is about, on a LLaMA-3-style Hugging Face directory made here: a
// byte-level BPE tokenizer.json (tests/vectors/hf_tokenizers/llama3, checked against HF's
// tokenizers there), grouped-query attention, llama3 RoPE scaling, tied embeddings and several
// EOS ids. It imports, generates, expands to CoLM-Air (chain 1 = the original, logits
// identical), chain-tunes on data prepared with its own tokenizer, and exports back with the
// same tokenizer files.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/run_cli.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"
#include "model/hf_llama_convert.h"
#include "model/model.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::quote;

const std::string kVectors = std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/hf_tokenizers/";

class Llama3HfCli : public ::testing::Test {
 protected:
  testing::RunResult run(const std::string& args) { return testing::run_chainlm(dir, args); }
  std::string generate(const std::string& model, const std::string& extra = "") {
    auto r = run("generate --model " + quote(model) + " --prompt 'The chain of models' --temperature 0 " +
                 "--max-tokens 24 --threads 1 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }

  // The HF directory: a random 2-layer LLaMA written by chainlm's HF export, then given the
  // LLaMA-3 tokenizer files and LLaMA-3 instruct's list of EOS ids.
  std::string make_llama3_dir() {
    const std::string hf = dir.file("llama3");
    const auto tok = load_tokenizer(kVectors + "llama3.tokenizer.json");
    ModelConfig c;
    c.dim = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 128;
    c.vocab_size = tok->vocab_size();
    c.tie_embeddings = true;
    c.rope_theta = 500000.0f;
    c.rope_scaling.type = RopeScaling::Type::kLlama3;
    c.rope_scaling.factor = 8;
    c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4;
    c.rope_scaling.original_max_position_embeddings = 32;
    c.max_seq_len = 128;
    Model m(c);
    m.init_random(18);
    export_hf_llama(m, 1, hf);
    fs::copy_file(kVectors + "llama3.tokenizer.json", hf + "/tokenizer.json");
    fs::copy_file(kVectors + "llama3.tokenizer_config.json", hf + "/tokenizer_config.json");
    end_of_text = tok->encode("<|end_of_text|>").at(0);
    eot = tok->encode("<|eot_id|>").at(0);
    json config = json::parse(read_file(hf + "/config.json"));
    config["bos_token_id"] = tok->bos_id();
    config["eos_token_id"] = {end_of_text, eot};
    write_file_atomic(hf + "/config.json", config.dump(2));
    return hf;
  }

  // Data prepared with the directory's tokenizer.
  std::string data_dir(const std::string& tokenizer) {
    std::string text;
    const char* words[] = {"the", "chain", "of", "models", "grows", "one", "block", "at", "a", "time",
                           "and", "every", "sub-model", "still", "writes", "its", "story", "café", "🐈", "42"};
    for (int doc = 0; doc < 120; ++doc) {
      for (int w = 0; w < 30; ++w) text += std::string(words[(doc * 7 + w * 3 + w / 4) % 20]) + (w % 10 == 9 ? ".\n" : " ");
      text += "\n";
    }
    testing::write_bytes(dir.file("corpus.txt"), text);
    auto r = run("prepare --tokenizer " + quote(tokenizer) + " --input " + quote(dir.file("corpus.txt")) + " --out " +
                 quote(dir.file("data")));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return dir.file("data");
  }

  testing::TempDir dir;
  int end_of_text = -1, eot = -1;
};

TEST_F(Llama3HfCli, ImportsGeneratesExpandsTunesAndExportsBack) {
  const std::string hf = make_llama3_dir();
  const json hf_config = json::parse(read_file(hf + "/config.json"));
  ASSERT_EQ(hf_config["rope_scaling"]["rope_type"], "llama3");
  ASSERT_EQ(hf_config["tie_word_embeddings"], true);
  ASSERT_EQ(hf_config["num_key_value_heads"], 2);

  // Import: generation reads the tokenizer.json and stops at any of the EOS ids.
  const std::string base_text = generate(hf);
  EXPECT_FALSE(base_text.empty());
  auto r = run("info --model " + quote(hf) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json info = json::parse(r.out);
  EXPECT_EQ(info["tokenizer"]["kind"], "hf");
  EXPECT_EQ(info["tokenizer"]["vocab_size"], hf_config["vocab_size"]);

  // Expand to CoLM-Air: chain 1 is the original model, logit for logit.
  const std::string exp = dir.file("exp");
  r = run("expand --from " + quote(hf) + " --add-chains 4 --kv-share --out " + quote(exp));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("chains [4,4] CoLM-Air"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max |logit difference| to the base on a 64-token probe: 0"), std::string::npos) << r.out;
  EXPECT_EQ(generate(exp, "--chains 1"), base_text);
  EXPECT_EQ(read_file(exp + "/tokenizer.json"), read_file(hf + "/tokenizer.json"));
  const auto exp_tok = load_tokenizer(exp);
  EXPECT_TRUE(exp_tok->is_eos(end_of_text));
  EXPECT_TRUE(exp_tok->is_eos(eot));
  EXPECT_EQ(json::parse(read_file(exp + "/config.json"))["rope_scaling"]["rope_type"], "llama3");

  // Chain tuning on data made with the same tokenizer (the data/model check compares them).
  const std::string data = data_dir(hf), tuned = dir.file("tuned");
  r = run("train --init " + quote(exp) + " --data " + quote(data) + " --out " + quote(tuned) +
          " --freeze-chains 1 --batch-size 2 --seq-len 32 --lr 3e-3 --steps 2 --eval-every 2 --eval-windows 2 "
          "--threads 1 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(generate(tuned, "--chains 1"), base_text);  // chain 1 was frozen

  // Export the 1-chain sub-model back: a HF directory with the same tokenizer files.
  const std::string back = dir.file("back");
  r = run("export --model " + quote(tuned) + " --chains 1 --format hf --out " + quote(back));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(back + "/tokenizer.json"), read_file(hf + "/tokenizer.json"));
  EXPECT_EQ(read_file(back + "/tokenizer_config.json"), read_file(hf + "/tokenizer_config.json"));
  const json back_config = json::parse(read_file(back + "/config.json"));
  EXPECT_EQ(back_config["rope_scaling"], hf_config["rope_scaling"]);
  // Expansion unties the head (output.weight starts as the embedding), so the export is untied.
  EXPECT_EQ(back_config["tie_word_embeddings"], false);
  const auto back_tok = load_tokenizer(back);
  EXPECT_TRUE(back_tok->is_eos(end_of_text));
  EXPECT_TRUE(back_tok->is_eos(eot));
  EXPECT_EQ(generate(back), base_text);

  // GGUF: chainlm writes llama.cpp's SentencePiece vocabulary only, so a tokenizer.json is
  // refused by name (nothing written); the weights alone go with --no-tokenizer.
  const std::string gguf = dir.file("l3.gguf");
  r = run("export --model " + quote(back) + " --format gguf --out " + quote(gguf));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("a Hugging Face tokenizer.json, which a GGUF file written by chainlm cannot carry"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("convert_hf_to_gguf.py"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(gguf));
  r = run("export --model " + quote(back) + " --format gguf --no-tokenizer --out " + quote(gguf));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run("generate --model " + quote(gguf) + " --tokenizer " + quote(back) +
          " --prompt 'The chain of models' --temperature 0 --max-tokens 24 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, base_text);
}

}  // namespace
}  // namespace chainlm
