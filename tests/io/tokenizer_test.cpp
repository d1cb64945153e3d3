#include "io/tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

const std::string kSharedData = CHAINLM_SOURCE_DIR "/../shared/data";

// About 300 KB of varied English-like sentences, one or two per line.
std::string generated_corpus(uint64_t seed) {
  const std::vector<std::string> subjects = {"the cat",       "a little girl", "my old friend",
                                             "the robot",     "every farmer",  "the tall tree",
                                             "a quiet dog",   "Tom",           "the teacher",
                                             "our neighbour", "the small bird"};
  const std::vector<std::string> verbs = {"found",      "painted", "carried",  "wanted", "watched",
                                          "remembered", "built",   "followed", "opened", "lost"};
  const std::vector<std::string> objects = {"a red ball",      "the shiny key",  "three apples",
                                            "the river",       "a broken clock", "the green door",
                                            "some warm bread", "a secret map",   "the garden"};
  const std::vector<std::string> tails = {
      "in the morning",         "after school",    "near the park",
      "because it was raining", "with great care", "again",
      "before dinner",          "on 12 May 2023",  "for 45 minutes"};
  Rng rng(seed);
  auto pick = [&](const std::vector<std::string>& v) { return v[rng.below(v.size())]; };
  std::string text;
  while (text.size() < 300000) {
    std::string s =
        pick(subjects) + " " + pick(verbs) + " " + pick(objects) + " " + pick(tails) + ".";
    s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    text += s;
    text += rng.below(3) == 0 ? " \"Why?\" asked " + pick(subjects) + ".\n" : "\n";
  }
  return text;
}

TEST(ByteTokenizer, RoundTripIncludingUtf8) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  EXPECT_EQ(tok.kind(), "byte");
  const std::string text =
      "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9F\x98\x80\n\t";  // héllo wörld ✓ 😀
  std::vector<int> ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'h');
  EXPECT_EQ(ids[1], 0xC3);  // bytes, not signed chars
  EXPECT_EQ(ids[2], 0xA9);
  EXPECT_EQ(tok.decode(ids), text);
  std::vector<int> with_specials = {256, 'h', 'i', 257};
  EXPECT_EQ(tok.decode(with_specials), "hi");
  EXPECT_EQ(tok.decode_token(256, 'a'), "a");
  EXPECT_EQ(tok.decode_token(-1, 256), "");
  EXPECT_THROW(tok.decode({258}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(Tokenizer, LoadByteSpec) {
  auto tok = load_tokenizer("byte");
  EXPECT_EQ(tok->kind(), "byte");
  EXPECT_EQ(tok->vocab_size(), 258);
}

TEST(Tokenizer, LoadErrorsNameThePath) {
  TempDir dir;
  const std::string text_file = dir.file("notes.txt");
  write_bytes(text_file, "this is not a sentencepiece model\nat all\n");
  for (const std::string& spec : {text_file, dir.file("missing.model"), std::string()}) {
    try {
      load_tokenizer(spec);
      FAIL() << "expected an error for '" << spec << "'";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(spec), std::string::npos) << msg;
      EXPECT_NE(msg.find("SentencePiece"), std::string::npos) << msg;  // says what is accepted
    }
  }
  write_bytes(dir.file("empty.model"), "");
  EXPECT_THROW(load_tokenizer(dir.file("empty.model")), Error);
  EXPECT_THROW(load_tokenizer(dir.path().string()), Error);  // directory without a tokenizer
}

// Found by fuzzing (fuzz/sentencepiece_fuzzer): a model holding a piece that starts with a NUL
// byte (an empty key to SentencePiece's trie builder, darts-clone, which reads C strings) made
// darts-clone throw its own exception type out of LoadFromSerializedProto, past chainlm's
// error handling. Built by hand here: a ModelProto (field 1, repeated SentencePiece: 1 piece,
// 2 score, 3 type) with "<unk>" and "\0a".
TEST(Tokenizer, SentencePieceModelWithANulPieceIsAnError) {
  TempDir dir;
  auto piece = [](const std::string& text, char type) {
    std::string p = std::string("\x0a") + (char)text.size() + text;  // piece
    p += std::string("\x15\x00\x00\x00\x00", 5);                      // score 0
    p += std::string("\x18") + type;                                    // type
    return std::string("\x0a") + (char)p.size() + p;
  };
  write_bytes(dir.file("nul_piece.model"), piece("<unk>", 2) + piece(std::string("\0a", 2), 1));
  try {
    load_tokenizer(dir.file("nul_piece.model"));
    FAIL() << "a model with a NUL piece was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("nul_piece.model: not a SentencePiece model ("), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("zero-length key"), std::string::npos) << msg;  // darts-clone's reason
  }
}

class SentencePieceTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    corpus_ = dir_.file("corpus.txt");
    write_bytes(corpus_, generated_corpus(7));
    model_ = dir_.file("tok.model");
  }
  TempDir dir_;
  std::string corpus_, model_;
};

TEST_F(SentencePieceTraining, TrainsAndRoundTrips) {
  train_sentencepiece(corpus_, 320, model_, 1234);
  // Only the model is written: no .vocab file or temporaries beside it.
  EXPECT_TRUE(std::filesystem::exists(model_));
  EXPECT_EQ(testing::count_entries(dir_.path()), 2u);

  auto tok = load_tokenizer(model_);
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 320);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);

  // In-domain text, whitespace runs, a newline, digits and characters never seen in training
  // (byte fallback) must all survive the round trip exactly.
  const std::string text =
      "The cat found a red ball near the park.\nTom  opened the green door, 2024 times!"
      " Na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC";
  std::vector<int> ids = tok->encode(text);
  EXPECT_LT(ids.size(), text.size());  // merges were learned
  for (int id : ids) EXPECT_TRUE(id >= 0 && id < 320);
  EXPECT_EQ(tok->decode(ids), text);

  // Streaming decode after BOS reproduces the text, without the dummy-prefix space.
  std::string streamed;
  int prev = tok->bos_id();
  for (int id : ids) {
    std::string piece = tok->decode_token(prev, id);
    int digits = 0;
    for (char c : piece) digits += std::isdigit(static_cast<unsigned char>(c)) ? 1 : 0;
    EXPECT_LE(digits, 1) << "split_digits should keep digits apart: '" << piece << "'";
    streamed += piece;
    prev = id;
  }
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(tok->decode_token(5, tok->bos_id()), "");
  EXPECT_THROW(tok->decode({320}), Error);
  EXPECT_THROW(tok->decode_token(1, -3), Error);
}

// Lines over SentencePiece's 64 KiB sentence limit (one-paragraph JSONL records, text without
// newlines) were skipped without a word, so what only they held was never learned (Greek came
// out as bytes), and a corpus of nothing else failed with "!sentences_.empty()". They are cut
// into pieces that fit, at spaces, or between characters where a piece has none.
TEST_F(SentencePieceTraining, LinesLongerThanTheTrainersLimitAreLearned) {
  const std::string words[] = {"\xCE\xB1\xCE\xBB\xCF\x86\xCE\xB1",
                               "\xCE\xB2\xCE\xB7\xCF\x84\xCE\xB1",
                               "\xCE\xB3\xCE\xAC\xCE\xBC\xCE\xBC\xCE\xB1"};  // alpha, beta, gamma
  std::string spaced, unspaced;
  for (int i = 0; spaced.size() < 200000; ++i) spaced += words[i % 3] + " ";
  for (int i = 0; unspaced.size() < 150000; ++i) unspaced += words[i % 3];
  write_bytes(corpus_, spaced + "\n" + unspaced + "\n");
  train_sentencepiece(corpus_, 300, model_, 5);
  auto tok = load_tokenizer(model_);
  const std::string word = words[2];  // 10 bytes
  EXPECT_LT(tok->encode(word).size(), 4u) << "the long lines were not learned";
  EXPECT_EQ(tok->decode(tok->encode(unspaced.substr(0, 600))), unspaced.substr(0, 600));
}

// A word (a run without spaces) of ~32k characters crashed SentencePiece's BPE trainer and one
// of 64k aborted it (it counts a word's characters in 16 bits): a base64 blob or minified JSON
// in a corpus was enough. Such runs are cut into sentences of their own.
TEST_F(SentencePieceTraining, RunsWithoutSpacesOfAnyLengthAreLearned) {
  std::string blob, letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  uint32_t state = 12345;
  for (int i = 0; i < 70000; ++i) {
    state = state * 1664525u + 1013904223u;
    blob += letters[(state >> 16) % letters.size()];
  }
  std::string prose;  // enough spaces for their piece to be covered, not spelled in bytes
  for (int i = 0; i < 3000; ++i) prose += "a cat sat on the mat\n";
  write_bytes(corpus_, prose + blob.substr(0, 40000) + "\nthe mat sat " + blob + "\n");
  train_sentencepiece(corpus_, 400, model_, 5);
  auto tok = load_tokenizer(model_);
  EXPECT_EQ(tok->decode(tok->encode(blob.substr(0, 1000))), blob.substr(0, 1000));
  EXPECT_LT(tok->encode("cat").size(), 3u);
}

// The unknown token reads as the model spells it, whole as in pieces: a model's own surface
// (llama2.c's tok512.model has " \342\201\207 ", escapes written out) came back from decode
// (/detokenize) but " ⁇ " from the pieces (completions). SentencePiece's trainer writes one.
TEST_F(SentencePieceTraining, TheUnknownTokenReadsAsTheModelSpellsIt) {
  const std::string prefix = dir_.file("unk");
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + corpus_ + " --model_prefix=" + prefix +
      " --vocab_size=60 --model_type=bpe --unk_surface=<?> --minloglevel=2");
  ASSERT_TRUE(status.ok()) << status.ToString();
  auto tok = load_tokenizer(prefix + ".model");
  const std::vector<int> cat = tok->encode("cat"), ids = {cat[0], 0, cat[0], 0};
  std::string pieces;
  int prev = tok->bos_id();
  for (int id : ids) {
    pieces += tok->decode_token(prev, id);
    prev = id;
  }
  const std::string text = tok->decode(ids);
  EXPECT_NE(text.find("<?>"), std::string::npos) << text;
  EXPECT_EQ(text, pieces);
}

TEST_F(SentencePieceTraining, DeterministicForASeed) {
  train_sentencepiece(corpus_, 300, model_, 99);
  const std::string second = dir_.file("tok2.model");
  train_sentencepiece(corpus_, 300, second, 99);
  EXPECT_EQ(read_bytes(model_), read_bytes(second));
  // On another number of threads too: SentencePiece recorded the count in the file, whose
  // CRC-32 the tokenizer checks compare (data prepared with one was refused with the other).
  const int threads = num_threads();
  const std::string third = dir_.file("tok3.model");
  set_num_threads(threads == 1 ? 2 : 1);
  train_sentencepiece(corpus_, 300, third, 99);
  set_num_threads(threads);
  EXPECT_EQ(read_bytes(model_), read_bytes(third));
  // And the file still loads as the same tokenizer.
  const auto a = load_tokenizer(model_), b = load_tokenizer(third);
  EXPECT_EQ(a->encode("the cat sat on the mat"), b->encode("the cat sat on the mat"));
}

TEST_F(SentencePieceTraining, BadInputs) {
  const std::string empty = dir_.file("empty.txt");
  write_bytes(empty, "\n  \n\n");
  EXPECT_THROW(train_sentencepiece(empty, 300, model_, 0), Error);
  EXPECT_THROW(train_sentencepiece(dir_.file("missing.txt"), 300, model_, 0), Error);
  EXPECT_THROW(train_sentencepiece(corpus_, 100, model_, 0), Error);  // below the byte pieces
  EXPECT_FALSE(std::filesystem::exists(model_));
}

TEST_F(SentencePieceTraining, TokenizerDirectoryScheme) {
  train_sentencepiece(corpus_, 300, model_, 1);
  const std::string data = dir_.file("data");
  std::filesystem::create_directories(data);
  EXPECT_THROW(find_tokenizer_in_dir(data), Error);

  save_tokenizer_to_dir("byte", data);
  EXPECT_EQ(find_tokenizer_in_dir(data), "byte");
  EXPECT_EQ(load_tokenizer(data)->kind(), "byte");

  save_tokenizer_to_dir(model_, data);
  EXPECT_EQ(find_tokenizer_in_dir(data),
            (std::filesystem::path(data) / "tokenizer.model").string());
  EXPECT_EQ(read_bytes(find_tokenizer_in_dir(data)), read_bytes(model_));
  EXPECT_EQ(load_tokenizer(data)->vocab_size(), 300);

  // Back to byte: the stale model must not shadow the new descriptor.
  save_tokenizer_to_dir("byte", data);
  EXPECT_EQ(find_tokenizer_in_dir(data), "byte");

  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(data) / "chainlm_tokenizer.json"));
  write_bytes((std::filesystem::path(data) / "chainlm_tokenizer.json").string(), R"({"kind": "wordpiece"})");
  EXPECT_THROW(find_tokenizer_in_dir(data), Error);
}

// The byte tokenizer's descriptor was tokenizer.json, Hugging Face's name for its tokenizers'
// files: chainlm still reads its own descriptor under that name and replaces it when it writes,
// and a Hugging Face tokenizer.json is read as one, never taken for the byte tokenizer.
TEST(TokenizerDirectory, OldDescriptorNameAndHuggingFaceFiles) {
  testing::TempDir dir;
  const std::filesystem::path data = dir.file("data");
  std::filesystem::create_directories(data);
  write_bytes((data / "tokenizer.json").string(), R"({"kind": "byte"})");
  EXPECT_EQ(find_tokenizer_in_dir(data.string()), "byte");
  save_tokenizer_to_dir("byte", data.string());
  EXPECT_TRUE(std::filesystem::exists(data / "chainlm_tokenizer.json"));
  EXPECT_FALSE(std::filesystem::exists(data / "tokenizer.json"));  // chainlm's own, renamed

  const std::filesystem::path hf = dir.file("hf");
  std::filesystem::create_directories(hf);
  const std::string hf_json = R"({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}})";
  write_bytes((hf / "tokenizer.json").string(), hf_json);
  EXPECT_EQ(find_tokenizer_in_dir(hf.string()), (hf / "tokenizer.json").string());
  try {
    load_tokenizer(hf.string());  // an empty vocabulary
    ADD_FAILURE() << "an empty Hugging Face tokenizer was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the vocabulary is empty"), std::string::npos) << e.what();
  }
  save_tokenizer_to_dir("byte", hf.string());  // the byte descriptor goes beside it
  EXPECT_EQ(read_bytes((hf / "tokenizer.json").string()), hf_json);
  EXPECT_EQ(find_tokenizer_in_dir(hf.string()), "byte");
  write_bytes((data / "tokenizer.json").string(), R"({"kind": "byte", "extra": 1})");
  std::filesystem::remove(data / "chainlm_tokenizer.json");
  EXPECT_THROW(find_tokenizer_in_dir(data.string()), Error);
}

TEST(SharedTokenizers, Stories260K) {
  const std::string path = kSharedData + "/stories260K/tok512.model";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const std::string text =
      "Once upon a time, there was a little girl named Lily. She loved to play!";
  std::vector<int> ids = tok->encode(text);
  EXPECT_LT(ids.size(), text.size());
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(SharedTokenizers, Llama2KnownIds) {
  const std::string path = kSharedData + "/tokenizers/llama2-tokenizer.model";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 32000);
  // Published LLaMA 2 ids: "▁Hello" = 15043, "▁world" = 3186; "\n" is byte token <0x0A> = 13.
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int>{15043, 3186}));
  EXPECT_EQ(tok->decode_token(tok->bos_id(), 15043), "Hello");
  EXPECT_EQ(tok->decode_token(15043, 3186), " world");
  EXPECT_EQ(tok->decode_token(3186, 13), "\n");
}

// A HF directory whose tokenizer is its tokenizer.model (TinyLlama-chat, Llama-2-chat) keeps its
// chat template, BOS/EOS and special tokens beside it; export and quantize copied the .model
// alone, and the copy served as a base model ("plain" chat template).
TEST_F(SentencePieceTraining, ADirectorysCompanionFilesComeWithItsModel) {
  train_sentencepiece(corpus_, 320, model_, 1234);
  const std::filesystem::path hf = std::filesystem::path(dir_.file("hf")),
                              out = std::filesystem::path(dir_.file("out"));
  std::filesystem::create_directories(hf);
  std::filesystem::create_directories(out);
  write_bytes((hf / "tokenizer.model").string(), read_bytes(model_));
  const std::map<std::string, std::string> companions = {
      {"tokenizer_config.json",
       R"({"chat_template": "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"})"},
      {"generation_config.json", R"({"eos_token_id": 2})"},
      {"special_tokens_map.json", R"({"eos_token": "</s>"})"},
      {"chat_template.jinja", "{{ messages }}"}};
  for (const auto& [name, text] : companions) write_bytes((hf / name).string(), text);
  save_tokenizer_to_dir(hf.string(), out.string());
  EXPECT_EQ(read_bytes((out / "tokenizer.model").string()), read_bytes(model_));
  for (const auto& [name, text] : companions)
    EXPECT_EQ(read_bytes((out / name).string()), text) << name;
  // A .model given by any other name is a file on its own: nothing beside it is taken.
  const std::filesystem::path alone = std::filesystem::path(dir_.file("alone"));
  std::filesystem::create_directories(alone);
  save_tokenizer_to_dir(model_, alone.string());
  EXPECT_FALSE(std::filesystem::exists(alone / "tokenizer_config.json"));
}

// `tokenizer encode --tokenizer RUN` follows the run's `latest` as `--model RUN` does (it said
// "no tokenizer in directory"); a `latest` naming the run itself is not followed round.
TEST(TokenizerDirectory, ARunDirectoryFollowsLatest) {
  TempDir dir;
  const std::filesystem::path run = dir.path() / "run";
  std::filesystem::create_directories(run / "step-00000002");
  save_tokenizer_to_dir("byte", (run / "step-00000002").string());
  write_bytes((run / "latest").string(), "step-00000002\n");
  EXPECT_EQ(find_tokenizer_in_dir(run.string()), "byte");
  EXPECT_EQ(load_tokenizer(run.string())->vocab_size(), 258);
  write_bytes((run / "latest").string(), ".\n");
  EXPECT_THROW(find_tokenizer_in_dir(run.string()), Error);
}

}  // namespace
}  // namespace chainlm
