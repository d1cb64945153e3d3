// Two user trials' mistakes with trained models (2026-12-05), which passed silently or failed
// late before: a --tokenizer that is not the model's (eval reported a perplexity of 2874 for
// 39, quantize and expand wrote checkpoints no command could use), a GGUF export into a
// directory that does not exist (an error naming temporary files), a vocab_size padded past the
// tokenizer's (generate, and training's samples, died on the first id without text), an
// expansion too large for memory (std::bad_alloc), and --init from weights without a tokenizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "model/checkpoint.h"
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
    write_bytes(config,
                R"({"dim": 32, "n_layers": 1, "n_heads": 2, "ffn_dim": 64, "vocab_size": 512,
                            "max_seq_len": 16})");
    run = dir.file("run");
    ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
    std::string text;
    for (int i = 0; i < 300; ++i)
      text += "another tokenizer for another model " + std::to_string(i) + "\n\n";
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
      "eval ppl --model " + quote(run) + " --data " + quote(dir.file("corpus.txt")) +
          " --tokenizer " + other,
      "generate --model " + quote(run) + " --prompt hi --max-tokens 2 --tokenizer " + other,
      "quantize --model " + quote(run) + " --type q8_0 --out " + quote(dir.file("q")) +
          " --tokenizer " + other,
      "expand --from " + quote(run) + " --add-chains 2 --out " + quote(dir.file("x")) +
          " --tokenizer " + other};
  for (const std::string& use : uses) {
    auto r = run_chainlm(dir, use);
    EXPECT_NE(r.exit_code, 0) << use;
    EXPECT_TRUE(contains(r.err, "has 300 tokens, but the tokenizer") &&
                contains(r.err, "has 258") &&
                contains(r.err, "not the tokenizer this model was trained with"))
        << use << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.file("q")));
  EXPECT_FALSE(fs::exists(dir.file("x")));
  // The model's own, named explicitly, is fine; so is leaving it out.
  auto own = run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " +
                                  quote(dir.file("corpus.txt")) + " --tokenizer byte");
  EXPECT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --out " +
                                 quote(dir.file("q")))
                .exit_code,
            0);
}

// A directory whose own tokenizer has more tokens than its weights have rows (a tokenizer.json
// copied in from another model): the error named neither the tokenizer nor the model.
// eval ppl with a --tokenizer other than the one the data was made with, while the model carries
// the data's (a docs trial): the refusal named the option's tokenizer "the model's" and advised
// preparing the data again with it; it names --tokenizer and says to drop it.
TEST_F(ModelUseCli, EvalWithAnotherTokenizerThanTheDatasSaysToDropIt) {
  // A model trained on data of t300.model, and a second tokenizer of 300 tokens.
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += "a second corpus of other words " + std::to_string(7 * i) + "\n\n";
  write_bytes(dir.file("second.txt"), text);
  const std::string data300 = dir.file("data300"), run300 = dir.file("run300");
  for (const std::string& command :
       {"tokenizer train --corpus " + quote(dir.file("second.txt")) + " --vocab-size 300 --out " +
            quote(dir.file("t300b.model")),
        "prepare --tokenizer " + quote(dir.file("t300.model")) + " --input " +
            quote(dir.file("other.txt")) + " --out " + quote(data300),
        "train --config " + quote(config) + " --data " + quote(data300) + " --out " +
            quote(run300) + " --steps 1 --batch-size 2 --seq-len 8 --quiet"}) {
    auto r = run_chainlm(dir, command);
    ASSERT_EQ(r.exit_code, 0) << command << ": " << r.err;
  }
  auto r = run_chainlm(dir, "eval ppl --model " + quote(run300) + " --data " + quote(data300) +
                                " --tokenizer " + quote(dir.file("t300b.model")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "than --tokenizer " + dir.file("t300b.model")) &&
              contains(r.err, "The model carries the data's tokenizer") &&
              contains(r.err, "drop --tokenizer") && !contains(r.err, "Prepare the data"))
      << r.err;
  // Without it, the model's own tokenizer is the data's: scored.
  r = run_chainlm(dir, "eval ppl --model " + quote(run300) + " --data " + quote(data300));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// A byte-tokenizer model exported to a Hugging Face directory (a docs trial): the refusal
// without --no-tokenizer advised a --tokenizer no format takes, and with it config.json got
// BOS 1 and EOS 2, control bytes to this model, not its 256 and 257.
TEST_F(ModelUseCli, AByteModelsHfExportKeepsItsBosAndEos) {
  auto r = run_chainlm(
      dir, "export --model " + quote(run) + " --format hf --out " + quote(dir.file("hf")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "pass --no-tokenizer to export the weights alone") &&
              !contains(r.err, "pass --tokenizer"))
      << r.err;
  r = run_chainlm(dir, "export --model " + quote(run) + " --format hf --no-tokenizer --out " +
                           quote(dir.file("hf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto config = nlohmann::json::parse(testing::read_bytes(dir.file("hf/config.json")));
  EXPECT_EQ(config["bos_token_id"], 256) << config.dump();
  EXPECT_EQ(config["eos_token_id"], 257) << config.dump();
}

TEST_F(ModelUseCli, ADirectorysOwnTokenizerLargerThanItsWeightsIsNamed) {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = c.n_kv_heads = 2;
  c.ffn_dim = 64;
  c.vocab_size = 200;
  c.max_seq_len = 16;
  Model m(c);
  m.init_random(3);
  const std::string small = dir.file("small");
  save_model(m, small);
  fs::copy_file(dir.file("t300.model"), small + "/tokenizer.model");
  testing::RunResult r;
  for (const std::string& use : {std::string("generate --prompt hi --max-tokens 2"),
                                 "eval ppl --data " + quote(dir.file("corpus.txt"))}) {
    r = run_chainlm(dir, use + " --model " + quote(small));
    EXPECT_NE(r.exit_code, 0) << use;
    EXPECT_TRUE(contains(r.err, small + "/tokenizer.model has 300 tokens but the model in " +
                                    small + " has a vocab_size of 200"))
        << use << ": " << r.err;
  }
}

// eval ppl reads a text file as prepare reads its inputs, with the same options (its errors
// named --text-field and --invalid-utf8, which eval did not have): a JSONL file under another
// field, split by lines, scores as the shard prepare makes of it with those options.
TEST_F(ModelUseCli, EvalReadsATextFileWithPreparesOptions) {
  std::string jsonl;
  for (int i = 0; i < 40; ++i)
    jsonl += "{\"body\": \"record " + std::to_string(i) + " says hello\\nand goes\"}\n";
  write_bytes(dir.file("records.jsonl"), jsonl);
  write_bytes(dir.file("train.jsonl"), jsonl);
  auto p = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("train.jsonl")) +
                                " --val-input " + quote(dir.file("records.jsonl")) +
                                " --text-field body --out " + quote(dir.file("rdata")));
  ASSERT_EQ(p.exit_code, 0) << p.err;
  auto shard = run_chainlm(
      dir, "eval ppl --json --model " + quote(run) + " --data " + quote(dir.file("rdata")));
  auto file = run_chainlm(dir, "eval ppl --json --model " + quote(run) + " --data " +
                                   quote(dir.file("records.jsonl")) + " --text-field body");
  ASSERT_EQ(shard.exit_code, 0) << shard.err;
  ASSERT_EQ(file.exit_code, 0) << file.err;
  const auto a = nlohmann::json::parse(shard.out), b = nlohmann::json::parse(file.out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_EQ(a["bytes"], b["bytes"]);
  EXPECT_EQ(a["documents"], 40);
  EXPECT_EQ(b["documents"], 40);
  // The run's checkpoint scored, which `latest` names (a run directory reads another later).
  EXPECT_EQ(a["checkpoint"], run + "/step-00000002") << a.dump();
  EXPECT_EQ(a["chains"][0]["loss"], b["chains"][0]["loss"]);
  auto missing = run_chainlm(
      dir, "eval ppl --model " + quote(run) + " --data " + quote(dir.file("records.jsonl")));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_TRUE(contains(missing.err, "--text-field")) << missing.err;
  // Text split by lines.
  write_bytes(dir.file("lines.txt"), "one line\nanother line\nand a third\n");
  auto lines = run_chainlm(dir, "eval ppl --json --model " + quote(run) + " --data " +
                                    quote(dir.file("lines.txt")) + " --split lines");
  ASSERT_EQ(lines.exit_code, 0) << lines.err;
  EXPECT_EQ(nlohmann::json::parse(lines.out)["documents"], 3);
}

// A run or a checkpoint given as eval's --data is named as such (the error said it "must hold
// val.bin", as if it were a data directory missing a file).
TEST_F(ModelUseCli, EvalDataThatIsARunOrACheckpointIsNamed) {
  for (const auto& [data, kind] : {std::pair<std::string, std::string>{run, "is a training run"},
                                   {run + "/step-00000002", "is a model checkpoint"}}) {
    auto r = run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(data));
    EXPECT_NE(r.exit_code, 0) << data;
    EXPECT_TRUE(contains(r.err, kind + ", not data to evaluate on")) << r.err;
  }
  // A file chainlm wrote beside the data or the weights is JSON text, which was scored as prose
  // (a tab completion away from data/val.bin). A text file of the user's there is still read.
  write_bytes(data + "/meta.json", R"({"note": "a data directory's own file"})");
  for (const auto& [file, says] :
       {std::pair<std::string, std::string>{data + "/meta.json",
                                            "is the data directory's meta.json, not data to "
                                            "evaluate on (pass the data directory itself"},
        {run + "/step-00000002/config.json", "is the model checkpoint's config.json, not data"},
        {run + "/metrics.jsonl", "is the training run's metrics.jsonl, not data"}}) {
    auto r = run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(file));
    EXPECT_NE(r.exit_code, 0) << file;
    EXPECT_TRUE(contains(r.err, says)) << r.err;
  }
  write_bytes(data + "/notes.txt", "first document\n\nsecond document\n");
  auto notes =
      run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(data + "/notes.txt"));
  EXPECT_EQ(notes.exit_code, 0) << notes.err;
}

// A file given as --model that is something else chainlm reads is named (a tokenizer passed as
// the model said only "not a directory").
TEST_F(ModelUseCli, AModelArgumentThatIsAnotherFileIsNamed) {
  for (const auto& [file, says] :
       {std::pair<std::string, std::string>{dir.file("t300.model"),
                                            "it is a tokenizer: pass it as --tokenizer"},
        {run + "/latest", "pass the directory that holds it, " + run},
        {run + "/step-00000002/model.safetensors",
         "pass the directory that holds it, " + run + "/step-00000002"}}) {
    auto r = run_chainlm(dir, "generate --model " + quote(file) + " --prompt hi --max-tokens 2");
    EXPECT_NE(r.exit_code, 0) << file;
    EXPECT_TRUE(contains(r.err, says)) << r.err;
  }
}

// The model's 512 ids against the byte tokenizer's 258: ids 258..511 have no text. An untrained
// model samples them about half the time; generate failed at the first ("token id 452 is
// outside the vocabulary"), and a run with --sample-every died at its first sample.
TEST_F(ModelUseCli, IdsPastTheTokenizersAreNeverSampled) {
  for (int seed = 1; seed <= 3; ++seed) {
    auto r = run_chainlm(dir, "generate --model " + quote(run) +
                                  " --prompt hi --max-tokens 12 --temperature 1 --json --seed " +
                                  std::to_string(seed));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    ASSERT_EQ(j["tokens"].size(), 12u);
    for (const auto& t : j["tokens"]) EXPECT_LT(t.get<int>(), 258) << r.out;
  }
  auto t =
      run_chainlm(dir, train_args(dir.file("sampled"), 2) + " --sample-every 1 --sample-tokens 12");
  EXPECT_EQ(t.exit_code, 0) << t.err;
}

TEST_F(ModelUseCli, AnExpansionTooLargeOrMistypedIsRefusedNamingIt) {
  auto big = run_chainlm(
      dir, "expand --from " + quote(run) + " --add-chains 20000 --out " + quote(dir.file("x")));
  EXPECT_NE(big.exit_code, 0);
  EXPECT_TRUE(contains(big.err, "more than the") && contains(big.err, "--add-chains 20000"))
      << big.err;
  auto comma = run_chainlm(
      dir, "expand --from " + quote(run) + " --add-chains 2, --out " + quote(dir.file("x")));
  EXPECT_NE(comma.exit_code, 0);
  EXPECT_TRUE(contains(comma.err, "ends with a comma")) << comma.err;
  // Spaces around items are read alike on both sides (a trailing one was refused, a leading
  // one accepted); a comma before a trailing space is still a trailing comma.
  auto comma_space = run_chainlm(
      dir, "expand --from " + quote(run) + " --add-chains '2, ' --out " + quote(dir.file("x")));
  EXPECT_TRUE(contains(comma_space.err, "ends with a comma")) << comma_space.err;
  EXPECT_FALSE(fs::exists(dir.file("x")));
  // Chains whose widths pass an int were refused for values nobody gave (a trial: "'n_heads'
  // must be positive (got -2147483646)"), and a count past an int was "not an integer".
  for (const char* huge : {"1610612736", "1073741822,1073741822"}) {
    auto r = run_chainlm(dir, "expand --from " + quote(run) + " --add-chains " + huge + " --out " +
                                  quote(dir.file("x")));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.err, "'dim' (") && contains(r.err, ") exceeds 1048576") &&
                contains(r.err, "check --add-chains"))
        << huge << ": " << r.err;
  }
  auto past_int = run_chainlm(dir, "expand --from " + quote(run) +
                                       " --add-chains 99999999999 --out " + quote(dir.file("x")));
  EXPECT_TRUE(contains(past_int.err, "--add-chains: '99999999999' is out of range for an integer"))
      << past_int.err;
  auto chains =
      run_chainlm(dir, "generate --model " + quote(run) + " --chains 99999999999 --prompt a");
  EXPECT_NE(chains.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir.file("x")));
  auto spaced = run_chainlm(
      dir, "expand --from " + quote(run) + " --add-chains ' 2 ' --out " + quote(dir.file("x")));
  EXPECT_EQ(spaced.exit_code, 0) << spaced.err;
}

// A GGUF written without a tokenizer carries none: starting a run from it is warned of.
TEST_F(ModelUseCli, InitFromWeightsWithoutATokenizerIsWarnedOf) {
  const std::string gguf = dir.file("m.gguf");
  ASSERT_EQ(run_chainlm(dir, "export --format gguf --no-tokenizer --model " + quote(run) +
                                 " --out " + quote(gguf))
                .exit_code,
            0);
  auto r =
      run_chainlm(dir, "train --init " + quote(gguf) + " --data " + quote(data) + " --out " +
                           quote(dir.file("r2")) + " --steps 1 --batch-size 2 --seq-len 8 --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "carries no tokenizer, so the data's")) << r.err;
  auto own =
      run_chainlm(dir, "train --init " + quote(run) + " --data " + quote(data) + " --out " +
                           quote(dir.file("r3")) + " --steps 1 --batch-size 2 --seq-len 8 --quiet");
  EXPECT_EQ(own.exit_code, 0) << own.err;
  EXPECT_FALSE(contains(own.err, "warning")) << own.err;
}

// More threads than cores: a decode 5.8x slower, eval's per-thread copies 16x the memory, and
// not a word. Said now (this machine has fewer than 4096 cores), for --threads and for
// OMP_NUM_THREADS alike.
TEST_F(ModelUseCli, MoreThreadsThanCoresAreWarnedOf) {
  auto many = run_chainlm(
      dir, "generate --model " + quote(run) + " --prompt hi --max-tokens 2 --threads 4096");
  EXPECT_EQ(many.exit_code, 0) << many.err;
  EXPECT_TRUE(contains(many.err, "warning: --threads 4096 is more than the")) << many.err;
  auto one = run_chainlm(
      dir, "generate --model " + quote(run) + " --prompt hi --max-tokens 2 --threads 1");
  EXPECT_FALSE(contains(one.err, "warning")) << one.err;
  // OMP_NUM_THREADS, which --threads 0 (the default) follows, is warned of the same way.
  {
    testing::ScopedEnv omp("OMP_NUM_THREADS", "4096");
    auto env = run_chainlm(dir, "generate --model " + quote(run) + " --prompt hi --max-tokens 2");
    EXPECT_EQ(env.exit_code, 0) << env.err;
    EXPECT_TRUE(contains(env.err, "warning: OMP_NUM_THREADS=4096 is more than the")) << env.err;
  }
  // A value that is no count stops every command; info's refusal advised a --threads it does
  // not have.
  {
    testing::ScopedEnv omp("OMP_NUM_THREADS", "abc");
    auto info = run_chainlm(dir, "info --system");
    EXPECT_EQ(info.exit_code, 1) << info.err;
    EXPECT_TRUE(contains(info.err, "OMP_NUM_THREADS='abc' is not a thread count")) << info.err;
    EXPECT_FALSE(contains(info.err, "--threads")) << info.err;
    auto gen = run_chainlm(dir, "generate --model " + quote(run) + " --prompt hi --max-tokens 2");
    EXPECT_EQ(gen.exit_code, 1) << gen.err;
    EXPECT_TRUE(contains(gen.err, "or pass --threads")) << gen.err;
  }
  // --full-prefill means something for CoLM-Air only (this model is a LLaMA): said.
  auto full = run_chainlm(dir, "generate --model " + quote(run) +
                                   " --prompt hi --max-tokens 2 --threads 1 --full-prefill");
  EXPECT_EQ(full.exit_code, 0) << full.err;
  EXPECT_TRUE(contains(full.err, "--full-prefill changes nothing for this model")) << full.err;
}

TEST_F(ModelUseCli, AGgufExportMakesItsDirectoryAndNamesAFile) {
  const std::string out = dir.file("new/deeper/m.gguf");
  auto r = run_chainlm(
      dir, "export --format gguf --no-tokenizer --model " + quote(run) + " --out " + quote(out));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(out));
  auto d = run_chainlm(dir, "export --format gguf --no-tokenizer --model " + quote(run) +
                                " --out " + quote(dir.file("gdir") + "/"));
  EXPECT_NE(d.exit_code, 0);
  EXPECT_TRUE(contains(d.err, "names a directory") && contains(d.err, "model.gguf")) << d.err;
  EXPECT_FALSE(fs::exists(dir.file("gdir")));
  // An existing directory, with or without the slash, is said to be one ("already exists").
  for (const std::string& existing : {dir.file("new"), dir.file("new") + "/"}) {
    auto e = run_chainlm(dir, "export --format gguf --no-tokenizer --model " + quote(run) +
                                  " --out " + quote(existing));
    EXPECT_NE(e.exit_code, 0);
    EXPECT_TRUE(contains(
        e.err, "a GGUF export writes one file: name it, e.g. " + dir.file("new/model.gguf")))
        << e.err;
  }
}

// A config too large for the machine, given to bench (which trains or decodes random weights of
// it), died in the allocator ("std::bad_alloc"); train refused it with its estimate.
TEST_F(ModelUseCli, BenchRefusesAConfigTooLargeWithItsEstimate) {
  write_bytes(dir.file("huge.json"), R"({"dim": 64, "n_layers": 1, "n_heads": 2, "ffn_dim": 128,
                                         "vocab_size": 2000000000, "max_seq_len": 64})");
  for (const std::string bench : {"bench decode", "bench prefill", "bench train"}) {
    auto r = run_chainlm(dir, bench + " --config " + quote(dir.file("huge.json")) + " --threads 1");
    EXPECT_EQ(r.exit_code, 1) << bench;
    EXPECT_TRUE(contains(r.err, "needs an estimated") && contains(r.err, "use a smaller config") &&
                !contains(r.err, "--memory-limit") && !contains(r.err, "bad_alloc"))
        << bench << ": " << r.err;
  }
  // A context too long for the sessions' caches (275 GB each), the weights small.
  write_bytes(dir.file("long.json"), R"({"dim": 256, "n_layers": 8, "n_heads": 4, "ffn_dim": 512,
                                         "vocab_size": 512, "max_seq_len": 16777216})");
  for (const std::string bench : {"bench decode", "bench prefill"}) {
    auto r = run_chainlm(dir, bench + " --config " + quote(dir.file("long.json")) + " --threads 1");
    EXPECT_EQ(r.exit_code, 1) << bench;
    EXPECT_TRUE(contains(r.err, "2 sessions at 16777216 tokens")) << bench << ": " << r.err;
  }
}

// bench decode's defaults (a prompt of 128, then 128 decoded) failed on the quickstart model (128
// positions), as quantization.md runs it: defaults shrink to fit, saying so; given lengths not.
TEST_F(ModelUseCli, BenchDefaultLengthsFitTheModelsContext) {
  write_bytes(dir.file("short.json"), R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64,
                                          "vocab_size": 258, "max_seq_len": 48})");
  const std::string bench = " --config " + quote(dir.file("short.json")) + " --threads 1";
  const std::pair<std::string, std::string> fitted[] = {
      {"bench decode", "a prompt of 24 tokens, then 24 decoded"},
      {"bench decode --prompt-tokens 40", "a prompt of 40 tokens, then 8 decoded"},
      {"bench decode --tokens 30", "a prompt of 18 tokens, then 30 decoded"},
      {"bench prefill", "a prompt of 48 tokens"}};
  for (const auto& [command, says] : fitted) {
    auto r = run_chainlm(dir, command + bench);
    ASSERT_EQ(r.exit_code, 0) << command << ": " << r.err;
    EXPECT_TRUE(contains(r.err, says + " (the default did not fit the model's 48 positions)"))
        << command << ": " << r.err;
    const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
    EXPECT_EQ(j.value("prompt_tokens", 0), std::stoi(says.substr(12))) << r.out;
  }
  auto given = run_chainlm(dir, "bench decode --prompt-tokens 40 --tokens 20" + bench);
  EXPECT_EQ(given.exit_code, 1);
  EXPECT_TRUE(contains(given.err,
                       "--prompt-tokens 40 + --tokens 20 = 60 exceeds the model's max_seq_len 48"))
      << given.err;
  // A length given that leaves no room is the error, without a default first "fitted" to it.
  for (const auto& [command, says] :
       {std::pair<std::string, std::string>{
            "bench decode --prompt-tokens 60",
            "--prompt-tokens 60 leaves no position to decode in: the model has 48"},
        {"bench decode --tokens 48",
         "--tokens 48 leaves no position for a prompt: the model has 48"}}) {
    auto r = run_chainlm(dir, command + bench);
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_TRUE(contains(r.err, says + " (max_seq_len)")) << r.err;
    EXPECT_FALSE(contains(r.err, "did not fit")) << r.err;
  }
  // A length below the least is refused as given, naming its flag alone, before any default is
  // fitted beside it (a note of the other length "fitted", then "--prompt-tokens and --tokens
  // must be positive", named both).
  for (const auto& [command, says] :
       {std::pair<std::string, std::string>{"bench decode --tokens 0",
                                            "--tokens: must be at least 1 (got 0)"},
        {"bench decode --prompt-tokens 0", "--prompt-tokens: must be at least 1 (got 0)"},
        {"bench prefill --prompt-tokens 1", "--prompt-tokens: must be at least 2 (got 1)"}}) {
    auto r = run_chainlm(dir, command + bench);
    EXPECT_NE(r.exit_code, 0) << command;
    EXPECT_TRUE(contains(r.err, says)) << command << ": " << r.err;
    EXPECT_FALSE(contains(r.err, "did not fit")) << r.err;
  }
  auto fits = run_chainlm(dir, "bench decode --prompt-tokens 8 --tokens 8" + bench);
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_FALSE(contains(fits.err, "did not fit")) << fits.err;
}

// A weight near float's range in a file whose checksums agree (written so, or a run that
// diverged): eval printed "loss -nan" and exited 0, export and quantize called the NaN "a bug".
TEST_F(ModelUseCli, AModelComputingNonFiniteLogitsIsNamedSo) {
  std::unique_ptr<Model> m = load_model(run);
  ParamStore& ps = m->params();
  for (int i = 0; i < (int)ps.infos().size(); ++i)
    if (ps.info(i).name.find("norm") != std::string::npos) ps.value(i)[0] = 3e38f;
  const std::string bad = dir.file("bad");
  save_model(*m, bad);
  for (const auto& name : {"tokenizer.model", "chainlm_tokenizer.json"})
    if (fs::exists(run + "/step-00000002/" + std::string(name)))
      fs::copy(run + "/step-00000002/" + std::string(name), bad + "/" + name);
  const std::pair<std::string, std::string> uses[] = {
      {"eval ppl --model " + quote(bad) + " --data " + quote(dir.file("corpus.txt")),
       "'s loss is not finite"},
      {"export --format gguf --no-tokenizer --model " + quote(bad) + " --out " +
           quote(dir.file("b.gguf")),
       "'s own logits are not finite"},
      {"quantize --type q8_0 --model " + quote(bad) + " --out " + quote(dir.file("bq")),
       "'s own logits are not finite"}};
  for (const auto& [use, says] : uses) {
    auto r = run_chainlm(dir, use);
    EXPECT_EQ(r.exit_code, 1) << use;
    EXPECT_TRUE(contains(r.err, says) && !contains(r.err, "a bug")) << use << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.file("b.gguf")));
  EXPECT_FALSE(fs::exists(dir.file("bq")));
}

}  // namespace
}  // namespace chainlm
