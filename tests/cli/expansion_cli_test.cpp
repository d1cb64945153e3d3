// End-to-end: chainlm expand / train --init --freeze-chains / info / export on stories260K,
// and the commands' refusals.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/run_cli.h"
#include "io/llama2c_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

const std::string kStories = CHAINLM_SOURCE_DIR "/../shared/data/stories260K";
const std::string kCorpus = CHAINLM_SOURCE_DIR "/../shared/data/corpus/tinystories_val.txt";
const std::string kExpected =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

class ExpansionCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kStories + "/stories260K.bin") || !fs::exists(kStories + "/tok512.model") ||
        !fs::exists(kCorpus))
      GTEST_SKIP() << "stories260K or the TinyStories corpus is not present under " << kStories;
    bin = kStories + "/stories260K.bin";
    tok = kStories + "/tok512.model";
  }
  testing::RunResult run(const std::string& args) { return run_chainlm(dir, args); }
  std::string generate(const std::string& model, const std::string& extra = "") {
    auto r = run("generate --model " + quote(model) + " --temperature 0 --max-tokens 40 --threads 1 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }
  // A small data directory from the first 60 KB of TinyStories, tokenized with tok512.
  std::string data_dir() {
    std::ifstream in(kCorpus);
    std::string text(60000, '\0');
    in.read(text.data(), (std::streamsize)text.size());
    text.resize((size_t)in.gcount());
    write_bytes(dir.file("stories.txt"), text.substr(0, text.rfind("\n\n")));
    auto r = run("prepare --tokenizer " + quote(tok) + " --input " + quote(dir.file("stories.txt")) +
                 " --out " + quote(dir.file("data")));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return dir.file("data");
  }
  TempDir dir;
  std::string bin, tok;
};

TEST_F(ExpansionCli, ExpandTuneInspectAndExport) {
  const std::string exp = dir.file("exp");
  auto r = run("expand --from " + quote(bin) + " --add-chains 8 --kv-share --tokenizer " + quote(tok) +
               " --out " + quote(exp));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("chains [8,8] CoLM-Air"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max |logit difference| to the base on a 64-token probe: 0"), std::string::npos) << r.out;
  // The expanded model writes what the base writes, with 1 chain and with both.
  EXPECT_EQ(generate(exp, "--chains 1").substr(0, kExpected.size()), kExpected);
  EXPECT_EQ(generate(exp), generate(bin, "--tokenizer " + quote(tok)));

  r = run("info --model " + quote(exp) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto info = nlohmann::json::parse(r.out);
  EXPECT_EQ(info["chains"], nlohmann::json({8, 8}));
  EXPECT_EQ(info["architecture"], "CoLM-Air");
  // Chain 2 attends chain 1's K/V heads: kv_heads 0 alone read as none.
  EXPECT_EQ(info["per_chain"][0]["kv_shared"], false);
  EXPECT_EQ(info["per_chain"][1]["kv_shared"], true);
  EXPECT_EQ(info["per_chain"][1]["kv_heads"], 0);
  EXPECT_EQ(info["per_chain"][0]["params"].get<long>() + info["per_chain"][1]["params"].get<long>(),
            info["params"].get<long>());
  EXPECT_EQ(info["sub_models"][0]["kv_cache_bytes_per_token"], info["sub_models"][1]["kv_cache_bytes_per_token"]);
  EXPECT_EQ(info["tokenizer"]["vocab_size"], 512);
  const long total = info["params"], chain2 = info["per_chain"][1]["params"];

  // Chain tuning from the expanded checkpoint: no --config needed.
  const std::string data = data_dir(), tuned = dir.file("tuned");
  const std::string train = "train --init " + quote(exp) + " --data " + quote(data) + " --out " + quote(tuned) +
                            " --freeze-chains 1 --batch-size 4 --seq-len 64 --lr 3e-3 --eval-every 3 "
                            "--eval-windows 4 --threads 1 ";
  r = run(train + "--steps 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string trainable = "trainable: " + std::to_string(chain2) + " of " + std::to_string(total) + " parameters";
  EXPECT_NE(r.err.find(trainable), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("chains 1..1 frozen"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 0 | val loss k1="), std::string::npos) << r.err;  // the base's loss
  std::ifstream metrics(tuned + "/metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  EXPECT_NEAR(nlohmann::json::parse(first)["trainable_fraction"].get<double>(), (double)chain2 / total, 1e-9);
  // Resume keeps chain 1 frozen; changing the freeze on resume is refused, named with its value
  // and the run's beside every other option changed (each refusal named one, a user trial).
  r = run("train --out " + quote(tuned) +
          " --resume --steps 5 --freeze-chains 0 --lr 1e-3 --train-only head --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(
      r.err.find(
          "--lr 0.001 (the run's: 0.003), --freeze-chains 0 (the run's: 1), --train-only head "
          "(the run's: all) cannot change on resume"),
      std::string::npos)
      << r.err;
  r = run("train --out " + quote(tuned) + " --resume --steps 5 --quiet --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run("info --model " + quote(tuned));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("run directory, latest step-00000005"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 5, chains 1..1 frozen: trainable"), std::string::npos) << r.out;
  // Chain 1 is untouched, so sub-model 1 still writes the base's story.
  EXPECT_EQ(generate(tuned, "--chains 1").substr(0, kExpected.size()), kExpected);

  // Export the 1-chain sub-model to the HF layout; it loads and generates like the base.
  const std::string hf = dir.file("hf");
  r = run("export --model " + quote(tuned) + " --format hf --out " + quote(hf));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("per-chain RMSNorm"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(hf));
  r = run("export --model " + quote(tuned) + " --chains 1 --format hf --out " + quote(hf));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) EXPECT_TRUE(fs::exists(hf + "/" + f)) << f;
  EXPECT_EQ(generate(hf).substr(0, kExpected.size()), kExpected);
  r = run("export --model " + quote(tuned) + " --chains 1 --format hf --out " + quote(hf));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  // The same sub-model as one GGUF file, its SentencePiece tokenizer inside.
  r = run("export --model " + quote(tuned) + " --chains 1 --format gguf --out " + quote(dir.file("g.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(generate(dir.file("g.gguf")).substr(0, kExpected.size()), kExpected);

  // A HF directory is a base too (its tokenizer.model comes along), and info reads it.
  r = run("expand --from " + quote(hf) + " --add-chains 4,4 --kv-share --out " + quote(dir.file("exp2")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("with its tokenizer"), std::string::npos) << r.out;
  EXPECT_EQ(generate(dir.file("exp2")).substr(0, kExpected.size()), kExpected);
  r = run("info --model " + quote(hf));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Hugging Face LLaMA directory"), std::string::npos) << r.out;
}

TEST_F(ExpansionCli, RefusesBadRequests) {
  auto r = run("expand --from " + quote(bin) + " --add-chains 3 --kv-share --out " + quote(dir.file("x")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("must be a multiple of n_kv_heads (4)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("chains [8,3]"), std::string::npos) << r.err;
  r = run("expand --from " + quote(bin) + " --add-chains 1 --out " + quote(dir.file("x")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("4*1/8 KV heads, not an integer"), std::string::npos) << r.err;
  r = run("expand --from " + quote(bin) + " --add-chains eight --out " + quote(dir.file("x")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--add-chains: 'eight' is not an integer"), std::string::npos) << r.err;
  // Both became the seed 2^64 - 1 silently.
  for (const std::string& seed : {std::string("-1"), std::string("99999999999999999999")}) {
    r = run("expand --from " + quote(bin) + " --add-chains 8 --seed " + seed + " --out " +
            quote(dir.file("x")));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("--seed"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("must be a whole number from 0 to"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.file("x")));
  fs::create_directories(dir.file("taken"));
  r = run("expand --from " + quote(bin) + " --add-chains 8 --out " + quote(dir.file("taken")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  // --model, as every other command names the model it reads, is --from.
  r = run("expand --model " + quote(bin) + " --add-chains 8 --out " + quote(dir.file("taken")));
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  r = run("expand --model " + quote(bin) + " --from " + quote(bin) + " --add-chains 8 --out " +
          quote(dir.file("y")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("was given 2 times"), std::string::npos) << r.err;

  const std::string data = data_dir();
  auto train = [&](const std::string& extra) {
    return run("train --data " + quote(data) + " --out " + quote(dir.file("run")) +
               " --steps 1 --batch-size 2 --seq-len 32 --quiet " + extra);
  };
  r = train("--init " + quote(bin) + " --freeze-chains 1");  // a 1-chain model
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("the model has 1 chain, so at most 0 can be frozen"), std::string::npos) << r.err;
  r = train("--init " + quote(bin) + " --train-only head");  // stories260K ties its head
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("untied output head"), std::string::npos) << r.err;
  r = train("--init " + quote(bin) + " --train-only embeddings");
  EXPECT_NE(r.exit_code, 0);
  r = train("--init " + quote(bin) + " --config " + quote(bin));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not both"), std::string::npos) << r.err;
  ASSERT_EQ(run("expand --from " + quote(bin) + " --add-chains 8 --kv-share --out " + quote(dir.file("exp"))).exit_code, 0);
  r = train("--init " + quote(dir.file("exp")) + " --freeze-chains 1 --train-only head");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("exclude each other"), std::string::npos) << r.err;
  r = train("--init " + quote(dir.file("exp")) + " --freeze-chains 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("at most 1 can be frozen"), std::string::npos) << r.err;
  r = train("--init " + quote(dir.file("exp")) + " --freeze-chains 1 --chain-loss-weights 1,0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nothing would train"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("run") + "/latest"));
  // Head-only elastic fine-tuning of the (untied) expanded model works.
  r = train("--init " + quote(dir.file("exp")) + " --train-only head --chain-loss-weights 1,1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(ExpansionCliNoData, HfDirectoriesWithoutTokenizerOrOfOtherArchitectures) {
  TempDir dir;
  const Llama2cWeights w = testing::random_llama2c(testing::small_llama2c_header(false), 3);
  write_llama2c(w, dir.file("base.bin"));
  // A llama2.c .bin carries no tokenizer: export refuses to write a directory no tool could
  // feed text to, unless told (--no-tokenizer), or given the tokenizer (tested below).
  auto r = run_chainlm(dir, "export --model " + quote(dir.file("base.bin")) + " --format hf --out " + quote(dir.file("hf")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("is a llama2.c checkpoint, which carries no tokenizer"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--tokenizer"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("hf")));
  r = run_chainlm(dir, "export --model " + quote(dir.file("base.bin")) + " --format hf --no-tokenizer --out " +
                           quote(dir.file("hf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no tokenizer (--no-tokenizer)"), std::string::npos) << r.out;
  r = run_chainlm(dir, "generate --model " + quote(dir.file("hf")) + " --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no tokenizer in directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pass --tokenizer"), std::string::npos) << r.err;
  auto config = nlohmann::json::parse(read_bytes(dir.file("hf/config.json")));
  config["architectures"] = {"GPT2LMHeadModel"};
  config["model_type"] = "gpt2";
  write_bytes(dir.file("hf/config.json"), config.dump());
  r = run_chainlm(dir, "info --model " + quote(dir.file("hf")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unsupported architecture \"GPT2LMHeadModel\""), std::string::npos) << r.err;
  r = run_chainlm(dir, "expand --from " + quote(dir.file("hf")) + " --add-chains 6 --out " + quote(dir.file("e")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("LlamaForCausalLM"), std::string::npos) << r.err;
}

// export from a llama2.c .bin with --tokenizer writes a HF directory that works on text: the
// tokenizer must be a SentencePiece model of the model's vocabulary size (issue 15, item 12).
TEST(ExpansionCliNoData, ExportOfALlama2cBinTakesItsTokenizer) {
  TempDir dir;
  std::string corpus;
  for (int i = 0; i < 400; ++i)
    corpus += "the quick brown fox " + std::to_string(i * 37 % 101) + " jumps over the lazy dog\n";
  write_bytes(dir.file("corpus.txt"), corpus);
  auto r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("corpus.txt")) +
                                " --vocab-size 300 --out " + quote(dir.file("tok.model")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Llama2cHeader h = testing::small_llama2c_header(true);
  h.vocab_size = 300;
  write_llama2c(testing::random_llama2c(h, 4), dir.file("m.bin"));

  r = run_chainlm(dir, "export --model " + quote(dir.file("m.bin")) + " --format hf --tokenizer " +
                           quote(dir.file("tok.model")) + " --out " + quote(dir.file("hf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tokenizer.model (SentencePiece)"), std::string::npos) << r.out;
  EXPECT_EQ(read_bytes(dir.file("hf/tokenizer.model")), read_bytes(dir.file("tok.model")));
  r = run_chainlm(dir, "generate --model " + quote(dir.file("hf")) + " --prompt 'the quick' --max-tokens 3");
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // A tokenizer of another size, the byte tokenizer, and both flags at once are refused.
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("corpus.txt")) +
                           " --vocab-size 310 --out " + quote(dir.file("small.model")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "export --model " + quote(dir.file("m.bin")) + " --format hf --tokenizer " +
                           quote(dir.file("small.model")) + " --out " + quote(dir.file("hf2")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("has 310 tokens but the model's vocab_size is 300"), std::string::npos)
      << r.err;
  r = run_chainlm(dir, "export --model " + quote(dir.file("m.bin")) + " --format hf --tokenizer byte --out " +
                           quote(dir.file("hf2")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("the byte tokenizer, which a Hugging Face LLaMA directory written by chainlm cannot carry"),
            std::string::npos)
      << r.err;
  r = run_chainlm(dir, "export --model " + quote(dir.file("m.bin")) + " --format hf --no-tokenizer --tokenizer " +
                           quote(dir.file("tok.model")) + " --out " + quote(dir.file("hf2")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir.file("hf2")));
  // Another tokenizer of the same size than the one the model carries was embedded silently
  // (eval, generate and quantize warn).
  std::string other;
  for (int i = 0; i < 400; ++i)
    other += "a slow red hen " + std::to_string(i * 53 % 97) + " sat by a warm pond\n";
  write_bytes(dir.file("other.txt"), other);
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("other.txt")) +
                           " --vocab-size 300 --out " + quote(dir.file("other.model")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "export --model " + quote(dir.file("hf")) + " --format gguf --tokenizer " +
                           quote(dir.file("other.model")) + " --out " + quote(dir.file("o.gguf")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: --tokenizer " + dir.file("other.model") +
                       " is another file than the tokenizer"),
            std::string::npos)
      << r.err;
  // A model that carries no tokenizer, given one far smaller than its rows (the byte
  // tokenizer's 258 for 512), generated garbage without a word.
  h.vocab_size = 512;
  write_llama2c(testing::random_llama2c(h, 5), dir.file("big.bin"));
  r = run_chainlm(dir, "generate --model " + quote(dir.file("big.bin")) +
                           " --tokenizer byte --prompt a --max-tokens 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: --tokenizer byte has 258 tokens but " + dir.file("big.bin") +
                       " has 512 rows: 254 of them would be padding"),
            std::string::npos)
      << r.err;
  r = run_chainlm(dir, "generate --model " + quote(dir.file("m.bin")) + " --tokenizer " +
                           quote(dir.file("tok.model")) + " --prompt a --max-tokens 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace chainlm
