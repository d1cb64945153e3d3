// Malformed evaluation files: every error names the file and the line, and the CLI exits
// non-zero with it.
#include <gtest/gtest.h>

#include <cmath>

#include "cli/run_cli.h"
#include "core/error.h"
#include "error_of.h"
#include "eval/choice.h"
#include "eval/pairs.h"
#include "eval/run_metrics.h"
#include "eval_test_util.h"
#include "io/write_gzip.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;
using testing::write_gzip;

using test::error_of;

const std::string kTask = "a context\n1\nend a\nend b\nend c\nend d\n";

TEST(HellaswagParser, ReportsTheLineOfWhatIsWrong) {
  struct Case {
    std::string text, message;
  };
  const std::vector<Case> cases = {
      {"", "f.txt: no tasks (the file is empty)"},
      {kTask + "ctx\n0\nx\ny\n", "f.txt:7: the last task has only 4 of its 6 lines"},
      {kTask + "ctx\nx\na\nb\nc\nd\n", "f.txt:8: the gold label \"x\" is not an integer"},
      {kTask + "ctx\n1.5\na\nb\nc\nd\n", "f.txt:8: the gold label \"1.5\" is not an integer"},
      {kTask + "ctx\n\na\nb\nc\nd\n", "f.txt:8: the gold label \"\" is not an integer"},
      {kTask + "ctx\n4\na\nb\nc\nd\n", "f.txt:8: the gold label 4 is outside 0..3"},
      {kTask + "ctx\n-1\na\nb\nc\nd\n", "f.txt:8: the gold label -1 is outside 0..3"},
      {kTask + "  \n0\na\nb\nc\nd\n", "f.txt:7: the context line of a task is empty"},
      // Blank lines between tasks, as a hand-written file has them: said (a user trial).
      {kTask + "\n" + kTask,
       "f.txt:7: the context line of a task is empty (tasks follow each "
       "other without blank lines between them"},
      {kTask + "ctx\n0\na\nb\n\nd\n", "f.txt:11: ending 2 of the task at line 7 is empty"},
      // A line missing in the middle is named where it shows, not as a short last task.
      {"ctx\na\nb\nc\nd\n" + kTask, "f.txt:2: the gold label \"a\" is not an integer"},
      // A JSON Lines file (BLiMP pairs) says which command reads it.
      {"{\"sentence_good\": \"a\", \"sentence_bad\": \"b\"}\n", "go to `chainlm eval pairs`"},
  };
  for (const Case& c : cases) {
    const std::string what = error_of([&] { parse_hellaswag(c.text, "f.txt"); });
    EXPECT_NE(what.find(c.message), std::string::npos)
        << "want \"" << c.message << "\", got \"" << what << "\"";
  }
  // CRLF line ends and trailing newlines or blank lines are fine; a label may carry spaces.
  const std::string crlf = "ctx\r\n 3 \r\na\r\nb\r\nc\r\nd\r\n\r\n  \n";
  const auto tasks = parse_hellaswag(crlf, "f.txt");
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].label, 3);
  EXPECT_EQ(tasks[0].endings[3], "d");
}

TEST(PairsParser, ReportsTheLineOfWhatIsWrong) {
  const std::string good = R"({"sentence_good": "a b", "sentence_bad": "b a"})";
  struct Case {
    std::string text, message;
  };
  const std::vector<Case> cases = {
      {"", "p.jsonl: no sentence pairs"},
      {"\n  \n", "p.jsonl: no sentence pairs"},
      {good + "\n" + good + "\n{\"sentence_good\": \"x\"\n", "p.jsonl:3: invalid JSON"},
      // A key given twice was read as its last value, unseen.
      {R"({"sentence_good": "a b", "sentence_bad": "b a", "sentence_good": "x"})",
       "p.jsonl:1: key 'sentence_good' is given twice"},
      {good + "\n[1, 2]\n", "p.jsonl:2: expected a JSON object"},
      {good + "\n{\"sentence_good\": \"x\"}\n",
       "p.jsonl:2: the object has no \"sentence_bad\" field"},
      {"{\"sentence_bad\": \"x\"}\n", "p.jsonl:1: the object has no \"sentence_good\" field"},
      {good + "\n\n{\"sentence_good\": 3, \"sentence_bad\": \"x\"}\n",
       "p.jsonl:3: \"sentence_good\" is number"},
      {good + "\n{\"sentence_good\": \"x\", \"sentence_bad\": \" \"}\n",
       "p.jsonl:2: \"sentence_bad\" is empty"},
      {good + "\n{\"sentence_good\": \"a\\u0000b\", \"sentence_bad\": \"b a\"}\n",
       "p.jsonl:2: \"sentence_good\" holds a NUL character"},
  };
  for (const Case& c : cases) {
    const std::string what = error_of([&] { parse_sentence_pairs(c.text, "p.jsonl"); });
    EXPECT_NE(what.find(c.message), std::string::npos)
        << "want \"" << c.message << "\", got \"" << what << "\"";
  }
}

TEST(RunMetricsParser, ReportsTheLineOfWhatIsWrong) {
  const std::string ok =
      R"({"step": 1, "loss": 2.5, "chain_loss": [null, 2.5], "lr": 0.1, "tokens_per_s": 10, "step_ms": 3})";
  EXPECT_NE(error_of([&] {
              parse_run_metrics(ok + "\n{oops\n", "m.jsonl");
            }).find("m.jsonl:2: not valid JSON"),
            std::string::npos);
  // Unfinished (no newline after it): a killed writer's last line, skipped and reported.
  const RunMetrics torn = parse_run_metrics(ok + "\n{\"step\": 2, \"loss\": 2.", "m.jsonl");
  EXPECT_EQ(torn.torn_last_line, 2);
  EXPECT_EQ(torn.train.size(), 1u);
  EXPECT_EQ(parse_run_metrics(ok + "\n", "m.jsonl").torn_last_line, 0);
  EXPECT_NE(error_of([&] {
              parse_run_metrics(ok + "\n{\"loss\": 1}\n", "m.jsonl");
            }).find("m.jsonl:2: every line needs an integer \"step\""),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              parse_run_metrics("{\"step\": 2, \"val_loss\": 3}\n", "m.jsonl");
            }).find("m.jsonl:1: \"val_loss\" is number"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              parse_run_metrics("{\"step\": 2, \"val_loss\": [\"x\"]}\n", "m.jsonl");
            }).find("m.jsonl:1: \"val_loss\" holds string"),
            std::string::npos);
  const RunMetrics m =
      parse_run_metrics(ok + "\n{\"step\": 1, \"val_loss\": [3.0, 2.0]}\n", "m.jsonl");
  EXPECT_EQ(m.n_chains, 2);
  EXPECT_FALSE(m.has_train_loss(1));
  EXPECT_TRUE(m.has_train_loss(2));
  EXPECT_DOUBLE_EQ(final_train_loss(m, 2, 20), 2.5);
  EXPECT_TRUE(std::isnan(final_train_loss(m, 1, 20)));
}

// Task files are read as prepare reads a corpus: a .gz read as its text (it was parsed as
// compressed bytes: "the last task has only 3 of its 6 lines"), UTF-16 refused by name.
TEST(EvalFiles, CompressedFilesAreReadAndOtherEncodingsNamed) {
  TempDir dir;
  const std::string tasks = kTask + kTask;
  const std::string pairs = "{\"sentence_good\": \"a b\", \"sentence_bad\": \"b a\"}\n";
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"t.txt.gz", tasks}, {"p.jsonl.gz", pairs}}) {
    write_gzip(dir.file(name), text);
  }
  EXPECT_EQ(read_hellaswag_file(dir.file("t.txt.gz")).size(), 2u);
  EXPECT_EQ(read_sentence_pairs_file(dir.file("p.jsonl.gz")).size(), 1u);
  std::string u16 = "\xFF\xFE";
  for (char c : tasks) u16 += std::string(1, c) + std::string(1, '\0');
  write_bytes(dir.file("u16.txt"), u16);
  const std::string e = error_of([&] { read_hellaswag_file(dir.file("u16.txt")); });
  EXPECT_NE(e.find("is UTF-16 (little-endian) text"), std::string::npos) << e;
  // Invalid UTF-8 is read, with the warning prepare gives (it passed without a word).
  write_bytes(dir.file("latin1.txt"), kTask + "caf\xE9\n2\na\nb\nc\nd\n");
  write_bytes(dir.file("latin1.jsonl"),
              "{\"sentence_good\": \"a b\", \"sentence_bad\": \"b a\"}\n");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(read_hellaswag_file(dir.file("latin1.txt")).size(), 2u);
  const std::string warned = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(warned.find("latin1.txt: 1 invalid UTF-8 sequence, the first at byte"),
            std::string::npos)
      << warned;
  EXPECT_NE(warned.find("(line 7)"), std::string::npos) << warned;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(read_sentence_pairs_file(dir.file("latin1.jsonl")).size(), 1u);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // valid: no warning
  // Invalid bytes inside a JSON string: read as U+FFFD, as the warning says (the JSON parser
  // refused the file right after warning of it).
  write_bytes(dir.file("bad-utf8.jsonl"),
              "{\"sentence_good\": \"caf\xE9 b\", \"sentence_bad\": \"b a\"}\n");
  ::testing::internal::CaptureStderr();
  const std::vector<SentencePair> read = read_sentence_pairs_file(dir.file("bad-utf8.jsonl"));
  const std::string note = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read[0].good, "caf\xEF\xBF\xBD b");
  EXPECT_NE(note.find("each is read as U+FFFD"), std::string::npos) << note;
  EXPECT_EQ(read_hellaswag_file(dir.file("latin1.txt"))[1].context, "caf\xEF\xBF\xBD");
}

TEST(EvalCommands, BadFilesFailWithTheirLineNumber) {
  TempDir dir;
  Model model(test::unigram_config());
  test::set_unigram_weights(model);
  const std::string ckpt = dir.file("m");
  test::save_byte_checkpoint(model, ckpt);
  write_bytes(dir.file("label.txt"), kTask + "ctx\n7\na\nb\nc\nd\n");
  write_bytes(dir.file("short.txt"), kTask + "ctx\n1\n");
  write_bytes(dir.file("empty.txt"), "");
  write_bytes(dir.file("bad.jsonl"),
              "{\"sentence_good\": \"a\", \"sentence_bad\": \"b\"}\nnot json\n");
  write_bytes(dir.file("missing.jsonl"), "{\"sentence_good\": \"a\"}\n");
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"eval choice --format hellaswag " + quote(dir.file("label.txt")),
       "label.txt:8: the gold label 7 is outside 0..3"},
      {"eval choice --format hellaswag " + quote(dir.file("short.txt")),
       "short.txt:7: the last task has only 2"},
      {"eval choice --format hellaswag " + quote(dir.file("empty.txt")), "empty.txt: no tasks"},
      {"eval choice --format arc " + quote(dir.file("label.txt")),
       "--format \"arc\" is not supported"},
      {"eval choice", "pass the task file"},
      {"eval pairs --data " + quote(dir.file("bad.jsonl")), "bad.jsonl:2: invalid JSON"},
      {"eval pairs --data " + quote(dir.file("missing.jsonl")),
       "missing.jsonl:1: the object has no \"sentence_bad\""},
      {"eval pairs --data " + quote(dir.file("empty.txt")), "empty.txt: no sentence pairs"},
      {"eval pairs --data " + quote(dir.file("nope.jsonl")), "nope.jsonl"},
  };
  for (const Case& c : cases) {
    auto r = run_chainlm(dir, c.args + " --model " + quote(ckpt));
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
  }
}

}  // namespace
}  // namespace chainlm
