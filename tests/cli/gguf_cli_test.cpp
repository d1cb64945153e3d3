// `chainlm export --format gguf` end to end: a CoLM run with a SentencePiece tokenizer exports its
// 1-chain sub-model as one GGUF file that generate, eval and info read with the tokenizer inside
// (f32: the same greedy text as the run's sub-model 1), and what cannot be exported is refused
// without writing anything.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/test_temp_dir.h"
#include "run_cli.h"
#include "spawn_process.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

class GgufCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string text;
    const char* words[] = {"the", "small", "model", "reads", "bytes", "per", "token", "and", "writes",
                           "one", "file", "for", "llama.cpp", "users", "today"};
    for (int line = 0; line < 400; ++line) {
      for (int w = 0; w < 10; ++w) text += std::string(w ? " " : "") + words[(line * 7 + w * 3) % 15];
      text += "\n\n";
    }
    write_bytes(dir.file("text.txt"), text);
    auto r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("text.txt")) +
                                  " --vocab-size 300 --out " + quote(dir.file("tok.model")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run_chainlm(dir, "prepare --tokenizer " + quote(dir.file("tok.model")) + " --input " +
                             quote(dir.file("text.txt")) + " --out " + quote(dir.file("data")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    write_bytes(dir.file("config.json"), R"({"dim": 64, "n_layers": 2, "n_heads": 4, "ffn_dim": 128,
                                              "vocab_size": 300, "chains": [1, 1], "max_seq_len": 64})");
    run = dir.file("run");
    r = run_chainlm(dir, "train --config " + quote(dir.file("config.json")) + " --data " +
                             quote(dir.file("data")) + " --out " + quote(run) +
                             " --steps 20 --batch-size 4 --seq-len 32 --quiet --threads 1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  TempDir dir;
  std::string run;
};

TEST_F(GgufCli, ExportsAFileEveryInferenceCommandReads) {
  const std::string f32 = dir.file("m.gguf"), q8 = dir.file("m-q8_0.gguf");
  auto r = run_chainlm(dir, "export --format gguf --model " + quote(run) + " --chains 1 --out " + quote(f32));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "max |logit difference| after reading it back: 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "SentencePiece tokenizer inside")) << r.out;
  r = run_chainlm(dir, "export --format gguf --type q8_0 --model " + quote(run) + " --chains 1 --out " + quote(q8));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(fs::file_size(q8), fs::file_size(f32) / 2);
  EXPECT_EQ(testing::count_entries(dir.path()), 7u);  // no temporary file left beside them

  // generate: the tokenizer comes from inside the file; f32 gives sub-model 1's greedy text.
  const std::string gen = " --prompt 'the small' --temperature 0 --max-tokens 12";
  auto native = run_chainlm(dir, "generate --model " + quote(run) + " --chains 1" + gen);
  ASSERT_EQ(native.exit_code, 0) << native.err;
  auto from_gguf = run_chainlm(dir, "generate --model " + quote(f32) + gen);
  ASSERT_EQ(from_gguf.exit_code, 0) << from_gguf.err;
  EXPECT_EQ(from_gguf.out, native.out);
  auto from_q8 = run_chainlm(dir, "generate --model " + quote(q8) + gen);
  EXPECT_EQ(from_q8.exit_code, 0) << from_q8.err;

  auto ppl = run_chainlm(dir, "eval ppl --json --model " + quote(q8) + " --data " + quote(dir.file("data")));
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  const nlohmann::json j = nlohmann::json::parse(ppl.out);
  EXPECT_EQ(j.at("chains").size(), 1u);
  // The tokenizer inside the file counts the shard's bytes (bits per byte) and is checked
  // against the data's: shards of another tokenizer are refused, as for a checkpoint.
  EXPECT_TRUE(j.at("bytes").is_number_integer()) << ppl.out;
  EXPECT_GT(j.at("documents").get<long>(), 0) << ppl.out;
  r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("text.txt")) +
                           " --out " + quote(dir.file("byte-data")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto other = run_chainlm(
      dir, "eval ppl --model " + quote(f32) + " --data " + quote(dir.file("byte-data")));
  EXPECT_NE(other.exit_code, 0);
  EXPECT_TRUE(contains(other.err, "was made with another tokenizer")) << other.err;
  // Moved out of its directory, nothing can check it: said (it was scored without a word).
  fs::create_directories(dir.file("moved"));
  fs::copy_file(dir.file("byte-data/val.bin"), dir.file("moved/val.bin"));
  auto moved = run_chainlm(
      dir, "eval ppl --model " + quote(f32) + " --data " + quote(dir.file("moved/val.bin")));
  EXPECT_TRUE(contains(
      moved.err, "holds no tokenizer (prepare puts one beside its shards), so nothing checks"))
      << moved.err;

  auto info = run_chainlm(dir, "info --model " + quote(q8));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_TRUE(contains(info.out, "(GGUF v3 file)")) << info.out;
  EXPECT_TRUE(contains(info.out, "architecture \"llama\"")) << info.out;
  EXPECT_TRUE(contains(info.out, "Q8_0")) << info.out;
  EXPECT_TRUE(contains(info.out, "file_type 7 (q8_0)")) << info.out;
  EXPECT_TRUE(contains(info.out, "weights     q8_0")) << info.out;
  EXPECT_TRUE(contains(info.out, "tokenizer   sentencepiece, vocabulary 300")) << info.out;
  info = run_chainlm(dir, "info --json --model " + quote(f32));
  const nlohmann::json ij = nlohmann::json::parse(info.out);
  // Values as JSON of their types (every one was a string, "\"llama\"" and "8" alike).
  const nlohmann::json& meta = ij.at("gguf").at("metadata");
  EXPECT_EQ(meta.at("general.architecture"), "llama");
  EXPECT_TRUE(meta.at("llama.block_count").is_number_unsigned()) << meta.dump();
  EXPECT_TRUE(meta.at("llama.attention.layer_norm_rms_epsilon").is_number_float()) << meta.dump();
  EXPECT_EQ(meta.at("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(meta.at("tokenizer.ggml.tokens").at("length"), 300);
  EXPECT_EQ(meta.at("tokenizer.ggml.tokens").at("first").at(1), "<s>");
  EXPECT_EQ(ij.at("gguf").at("runs_in_chainlm"), true);
  // The file type as the metadata holds it, a number (it was the string "0").
  EXPECT_EQ(ij.at("gguf").at("file_type"), 0) << ij.at("gguf").dump();
  EXPECT_EQ(ij.at("gguf").at("file_type_name"), "f32");

  // A quantized checkpoint exports its own blocks; a GGUF exports again as it is.
  r = run_chainlm(dir, "quantize --model " + quote(run) + " --type q8_0 --out " + quote(dir.file("q")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(dir, "export --format gguf --model " + quote(dir.file("q")) + " --chains 1 --out " +
                           quote(dir.file("q.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "the model's blocks, copied")) << r.out;
  // The same blocks as --type q8_0 made from the fp32 run (the files differ in general.name).
  auto from_q = run_chainlm(dir, "generate --model " + quote(dir.file("q.gguf")) + gen);
  EXPECT_EQ(from_q.out, from_q8.out);
  // Its dequantized weights in F32 or F16: the quantized model's products round activations to
  // q8_0 and the file's do not, so the logits differ a little; the export failed on f32,
  // calling that a bug.
  for (const char* type : {"f32", "f16"}) {
    const std::string out = dir.file(std::string("q-") + type + ".gguf");
    r = run_chainlm(dir, "export --format gguf --type " + std::string(type) + " --model " +
                             quote(dir.file("q")) + " --chains 1 --out " + quote(out));
    EXPECT_EQ(r.exit_code, 0) << type << ": " << r.err;
    EXPECT_TRUE(fs::exists(out)) << type;
  }
}

// A model with a chat template (tokenizer_config.json) keeps it in the GGUF file, where llama.cpp
// writes it and where chainlm serve reads it: a chat model exported stayed a chat model only in
// name (serve fell back to "plain").
// Bits per byte count the text's own bytes: a file and the shard prepare makes of it agree even
// where decoding the tokens does not give the text back (SentencePiece drops trailing spaces).
TEST_F(GgufCli, AFileAndItsShardScoreTheSameBytes) {
  std::string text;
  for (int i = 0; i < 30; ++i)
    text += "the small model reads " + std::string(i % 3, ' ') + "\nbytes per token  \n\n";
  write_bytes(dir.file("spaced.txt"), text);
  auto r = run_chainlm(dir, "prepare --tokenizer " + quote(dir.file("tok.model")) + " --input " +
                                quote(dir.file("text.txt")) + " --val-input " +
                                quote(dir.file("spaced.txt")) + " --out " +
                                quote(dir.file("spaced-data")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto file = run_chainlm(
      dir, "eval ppl --json --model " + quote(run) + " --data " + quote(dir.file("spaced.txt")));
  auto shard = run_chainlm(
      dir, "eval ppl --json --model " + quote(run) + " --data " + quote(dir.file("spaced-data")));
  ASSERT_EQ(file.exit_code, 0) << file.err;
  ASSERT_EQ(shard.exit_code, 0) << shard.err;
  const auto a = nlohmann::json::parse(file.out), b = nlohmann::json::parse(shard.out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_EQ(a["documents"], 30);
  EXPECT_EQ(b["documents"], 30);
  EXPECT_EQ(a["bytes"], b["bytes"]);
  EXPECT_EQ(a["chains"][0]["bpb"], b["chains"][0]["bpb"]);
}

TEST_F(GgufCli, TheChatTemplateTravelsInTheFile) {
  const std::string checkpoint = run + "/" + testing::trimmed(testing::read_bytes(run + "/latest"));
  const std::string smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\n"
      "You are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
      "message['role'] + "
      "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  write_bytes(checkpoint + "/tokenizer_config.json",
              nlohmann::json{{"chat_template", smol}}.dump());
  const std::string f = dir.file("chat.gguf");
  auto r = run_chainlm(
      dir, "export --format gguf --model " + quote(run) + " --chains 1 --out " + quote(f));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const GgufReader gguf(f);
  ASSERT_TRUE(gguf.has("tokenizer.chat_template"));
  EXPECT_EQ(gguf.get_string("tokenizer.chat_template"), smol);
  // serve reads it: ChatML, with the template's default system turn.
  const std::string out = dir.file("serve.out"), err = dir.file("serve.err");
  const pid_t pid = testing::spawn(
      {CHAINLM_BINARY, "serve", "--model", f, "--port", "0", "--threads", "1"}, {}, out, err);
  ASSERT_GT(pid, 0);
  std::string printed;
  for (int i = 0; i < 1000 && !contains(printed, "chat template"); ++i) {
    printed = testing::read_bytes(out);
    ::usleep(10000);
  }
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  EXPECT_TRUE(contains(printed, "chat template chatml (with its default system message)"))
      << printed << testing::read_bytes(err);
  // A HF export keeps it beside its tokenizer.model, as a quantized copy does.
  r = run_chainlm(dir, "export --format hf --model " + quote(run) + " --chains 1 --out " +
                           quote(dir.file("hf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::read_bytes(dir.file("hf/tokenizer_config.json")),
            testing::read_bytes(checkpoint + "/tokenizer_config.json"));
  // From the GGUF on: a quantized copy and an HF export of it wrote no tokenizer_config.json, so
  // the template was gone from them and from a GGUF exported again (a user trial).
  r = run_chainlm(dir,
                  "quantize --model " + quote(f) + " --type q8_0 --out " + quote(dir.file("q8")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_chainlm(
      dir, "export --format hf --model " + quote(f) + " --out " + quote(dir.file("hf-of-gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* copy : {"q8", "hf-of-gguf"}) {
    const nlohmann::json config = nlohmann::json::parse(
        testing::read_bytes(dir.file(std::string(copy) + "/tokenizer_config.json")));
    EXPECT_EQ(config.value("chat_template", ""), smol) << copy;
    EXPECT_EQ(config.value("eos_token", ""), "</s>") << copy;  // the SentencePiece trainer's EOS
  }
  r = run_chainlm(dir, "export --format gguf --model " + quote(dir.file("q8")) + " --out " +
                           quote(dir.file("again.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const GgufReader again(dir.file("again.gguf"));
  ASSERT_TRUE(again.has("tokenizer.chat_template"));
  EXPECT_EQ(again.get_string("tokenizer.chat_template"), smol);
}

// A downloaded GGUF's strings may hold control bytes and bytes that are not UTF-8: `info` wrote
// a name holding ESC [2J to the terminal raw (clearing it), and `info --json` failed with the
// JSON library's "invalid UTF-8 byte", naming no file.
TEST_F(GgufCli, InfoPrintsAFilesStringsSafely) {
  fs::copy(run, dir.file("namezzzz"), fs::copy_options::recursive);
  const std::string file = dir.file("n.gguf");
  ASSERT_EQ(run_chainlm(dir, "export --format gguf --model " + quote(dir.file("namezzzz")) +
                                 " --chains 1 --out " + quote(file))
                .exit_code,
            0);
  std::string bytes = testing::read_bytes(file);
  const size_t at = bytes.find("namezzzz");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at + 4, 4, "\xff\x1b[J");
  // As another tool's file (no CRC of the metadata, which the edit fails): the key's name changed.
  const size_t crc_key = bytes.find(kGgufMetadataCrcKey);
  ASSERT_NE(crc_key, std::string::npos);
  bytes[crc_key] = 'x';
  write_bytes(file, bytes);
  auto text = run_chainlm(dir, "info --model " + quote(file));
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(contains(text.out, "name \"name\\xff\\x1b[J\"")) << text.out;
  EXPECT_EQ(text.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(text.out.find('\xff'), std::string::npos) << "the terminal's text stays UTF-8";
  auto json = run_chainlm(dir, "info --json --model " + quote(file));
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out).at("gguf").at("general.name"),
            "name\xef\xbf\xbd\x1b[J");
}

TEST_F(GgufCli, RefusesWithoutWritingAnything) {
  const std::string out = dir.file("x.gguf");
  auto r = run_chainlm(dir, "export --format gguf --model " + quote(run) + " --out " + quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--chains 1")) << r.err;  // the 2-chain model: only sub-model 1 is a LLaMA
  r = run_chainlm(dir, "export --format hf --type q8_0 --model " + quote(run) + " --chains 1 --out " + quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--type applies to --format gguf only")) << r.err;
  r = run_chainlm(dir, "export --format gguf --type q5_k --model " + quote(run) + " --chains 1 --out " + quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(out));
  write_bytes(out, "keep me");
  r = run_chainlm(dir, "export --format gguf --model " + quote(run) + " --chains 1 --out " + quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "already exists")) << r.err;
  EXPECT_EQ(testing::read_bytes(out), "keep me");

  // A truncated GGUF: a clear error from every reader.
  r = run_chainlm(dir, "export --format gguf --model " + quote(run) + " --chains 1 --out " + quote(dir.file("t.gguf")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string bytes = testing::read_bytes(dir.file("t.gguf"));
  write_bytes(dir.file("t.gguf"), bytes.substr(0, bytes.size() / 2));
  r = run_chainlm(dir, "generate --model " + quote(dir.file("t.gguf")) + " --prompt the --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "truncated GGUF")) << r.err;
  r = run_chainlm(dir, "info --model " + quote(dir.file("t.gguf")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "truncated GGUF")) << r.err;

  // One bit flipped in the middle of the weights (a bad copy): generated as if nothing were wrong
  // before the file carried its tensors' CRC-32s; now every command that loads it stops, naming
  // the tensor (q8_0 blocks are checked the same way).
  for (const char* type : {"f32", "q8_0"}) {
    const std::string flipped = dir.file(std::string("flipped-") + type + ".gguf");
    r = run_chainlm(dir, "export --format gguf --type " + std::string(type) + " --model " +
                             quote(run) + " --chains 1 --out " + quote(flipped));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string b = testing::read_bytes(flipped);
    const GgufReader g(flipped);
    const GgufTensorInfo* t = g.find("blk.0.ffn_down.weight");
    ASSERT_NE(t, nullptr);
    // The data section ends the file, its last tensor padded to the 32-byte alignment.
    const GgufTensorInfo& last = g.tensors().back();
    const size_t data_start = b.size() - (last.offset + (last.bytes + 31) / 32 * 32);
    b[data_start + t->offset + t->bytes / 2] ^= 0x10;
    write_bytes(flipped, b);
    for (const std::string& cmd : {std::string("generate --prompt the --max-tokens 2"),
                                   "eval ppl --data " + quote(dir.file("data"))}) {
      r = run_chainlm(dir, cmd + " --model " + quote(flipped));
      EXPECT_NE(r.exit_code, 0) << cmd;
      EXPECT_TRUE(contains(r.err, flipped + ": tensor 'blk.0.ffn_down.weight' fails its checksum"))
          << r.err;
    }
  }
}

}  // namespace
}  // namespace chainlm
