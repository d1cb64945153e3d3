// The everyday workflow never overwrites or deletes what it did not create (issue 15): prepare,
// plot and tokenizer train refuse an existing output unless --overwrite, train refuses a
// directory whose metrics.jsonl is not a run's, a run stores absolute data paths (so it resumes
// from any directory), and resuming from a checkpoint older than the run's newest moves the
// newer checkpoints and their metrics aside instead of deleting them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "core/version.h"
#include "model/checkpoint.h"
#include "run_cli.h"
#include "workflow_fixture.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::trimmed;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::RunResult;
using testing::write_bytes;

// Runs chainlm with `cwd` as the working directory.
RunResult run_in(const std::string& cwd, const testing::TempDir& dir, const std::string& args) {
  const std::string err = dir.file("err_in.txt");
  const std::string cmd = "cd " + quote(cwd) + " && '" + CHAINLM_BINARY + "' " + args +
                          " >/dev/null 2>" + quote(err);
  const int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, "", read_bytes(err)};
  fs::remove(err);
  return r;
}

TEST_F(WorkflowSafety, PrepareRefusesANonEmptyOutputUnlessOverwrite) {
  const std::string out = dir.file("prepared");
  const std::string cmd = "prepare --tokenizer byte --input " + quote(dir.file("corpus.txt")) + " --out " + quote(out);
  ASSERT_EQ(run_chainlm(dir, cmd).exit_code, 0);
  const std::string meta = read_bytes(out + "/meta.json");
  write_bytes(out + "/notes.txt", "mine");
  auto again = run_chainlm(dir, cmd + " --seed 5");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_TRUE(contains(again.err, "is not empty") && contains(again.err, "--overwrite")) << again.err;
  EXPECT_EQ(read_bytes(out + "/meta.json"), meta);
  auto forced = run_chainlm(dir, cmd + " --seed 5 --overwrite");
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(read_bytes(out + "/meta.json"), meta);
  EXPECT_EQ(read_bytes(out + "/notes.txt"), "mine");  // replaces its own files only
  // A directory prepare did not make (a model's tokenizer files, the user's notes): not even
  // --overwrite replaces anything there (it deleted the tokenizer files).
  const std::string model_dir = dir.file("model");
  fs::create_directories(model_dir);
  write_bytes(model_dir + "/tokenizer.model", "a tokenizer");
  write_bytes(model_dir + "/meta.json", "{}");
  for (const std::string& extra : {std::string(), std::string(" --overwrite")}) {
    auto r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("corpus.txt")) +
                                  " --out " + quote(model_dir) + extra);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.err, "is not a data directory") && !contains(r.err, "pass --overwrite"))
        << r.err;
  }
  EXPECT_EQ(read_bytes(model_dir + "/tokenizer.model"), "a tokenizer");
  EXPECT_EQ(read_bytes(model_dir + "/meta.json"), "{}");
  EXPECT_EQ(std::distance(fs::directory_iterator(model_dir), fs::directory_iterator()), 2);
  // An --out that is a file is refused, overwrite or not.
  auto file = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("corpus.txt")) +
                                   " --out " + quote(dir.file("corpus.txt")) + " --overwrite");
  EXPECT_NE(file.exit_code, 0);
  EXPECT_TRUE(contains(file.err, "is a file")) << file.err;
  EXPECT_TRUE(contains(read_bytes(dir.file("corpus.txt")), "second document"));
}

// train starts itself again with OMP_WAIT_POLICY=passive (src/core/wait_policy.h). Through
// /proc/self/exe the kernel named the process "exe", and pgrep/pkill/killall chainlm missed it.
TEST_F(WorkflowSafety, ATrainingIsNamedChainlmAfterItStartsItselfAgain) {
  const std::string args = train_args(dir.file("run"), 100000);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c",
            ("exec '" + std::string(CHAINLM_BINARY) + "' " + args + " >/dev/null 2>&1").c_str(),
            (char*)nullptr);
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  // The process restarted once its environment holds the policy.
  const std::string proc = "/proc/" + std::to_string(pid);
  bool restarted = false;
  for (int i = 0; i < 400 && !restarted; ++i) {
    restarted = contains(read_bytes(proc + "/environ"), "OMP_WAIT_POLICY=passive");
    if (!restarted) ::usleep(25000);
  }
  const std::string comm = trimmed(read_bytes(proc + "/comm"));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(restarted);
  EXPECT_EQ(comm, fs::path(CHAINLM_BINARY).filename().string().substr(0, 15));
}

TEST_F(WorkflowSafety, PlotAndTokenizerTrainNeverReplaceAUsersFile) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  const std::string corpus = dir.file("corpus.txt"), text = read_bytes(corpus);
  auto plot = run_chainlm(dir, "plot " + quote(run) + " --out " + quote(corpus));
  EXPECT_NE(plot.exit_code, 0);
  EXPECT_TRUE(contains(plot.err, "is not a plot chainlm drew") && contains(plot.err, "--overwrite"))
      << plot.err;
  EXPECT_EQ(read_bytes(corpus), text);
  // A directory: the advice was --overwrite, which then failed at the rename.
  const std::string folder = dir.file("plots");
  fs::create_directories(folder);
  for (const std::string& cmd : {std::string("plot"), std::string("report")})
    for (const std::string& extra : {std::string(), std::string(" --overwrite")}) {
      auto r = run_chainlm(dir, cmd + " " + quote(run) + " --out " + quote(folder) + extra);
      EXPECT_NE(r.exit_code, 0) << cmd << extra;
      EXPECT_TRUE(contains(r.err, "is a directory; give a file name, e.g. " + folder + "/") &&
                  !contains(r.err, "pass --overwrite"))
          << r.err;
      EXPECT_TRUE(fs::is_empty(folder));
    }
  // A directory not made yet, named with a trailing '/': report wrote "new/-loss.png", then
  // failed at the rename.
  for (const std::string& cmd : {std::string("plot"), std::string("report")})
    for (const std::string& tail :
         {std::string("/"), std::string("/.")}) {  // "new/." wrote ".-loss.png"
      auto r = run_chainlm(dir, cmd + " " + quote(run) + " --out " + quote(dir.file("new") + tail));
      EXPECT_NE(r.exit_code, 0) << cmd << tail;
      EXPECT_TRUE(
          contains(r.err, "names a directory; give a file name, e.g. " + dir.file("new") + "/"))
          << r.err;
      EXPECT_FALSE(fs::exists(dir.file("new"))) << cmd << tail;
    }
  // A PNG of the user's (any PNG: it passed as "an earlier plot" before plots were marked) is
  // kept by plot and by report, whose plot would be named after the report.
  const std::string photo = dir.file("photo.png"), report_png = dir.file("notes-loss.png");
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + "the user's picture";
  write_bytes(photo, png);
  write_bytes(report_png, png);
  plot = run_chainlm(dir, "plot " + quote(run) + " --out " + quote(photo));
  EXPECT_NE(plot.exit_code, 0);
  EXPECT_TRUE(contains(plot.err, "is not a plot chainlm drew")) << plot.err;
  EXPECT_EQ(read_bytes(photo), png);
  auto report = run_chainlm(dir, "report " + quote(run) + " --out " + quote(dir.file("notes.md")));
  EXPECT_NE(report.exit_code, 0);
  EXPECT_TRUE(contains(report.err, "is not a plot chainlm drew")) << report.err;
  EXPECT_EQ(read_bytes(report_png), png);
  EXPECT_FALSE(fs::exists(dir.file("notes.md")));
  // A plot chainlm drew is replaced, and the report's own too, each without --overwrite.
  const std::string drawn = dir.file("drawn.png");
  for (int i = 0; i < 2; ++i) {
    plot = run_chainlm(dir, "plot " + quote(run) + " --out " + quote(drawn));
    EXPECT_EQ(plot.exit_code, 0) << plot.err;
    report = run_chainlm(dir, "report " + quote(run) + " --out " + quote(dir.file("mine.md")));
    EXPECT_EQ(report.exit_code, 0) << report.err;
  }
  // A report the user has since added notes to is theirs too (it was replaced without a word);
  // --overwrite replaces it.
  const std::string mine = read_bytes(dir.file("mine.md"));
  write_bytes(dir.file("mine.md"), mine + "\nMY NOTES\n");
  report = run_chainlm(dir, "report " + quote(run) + " --out " + quote(dir.file("mine.md")));
  EXPECT_NE(report.exit_code, 0);
  EXPECT_TRUE(contains(report.err, "a report edited since") && contains(report.err, "--overwrite"))
      << report.err;
  EXPECT_EQ(read_bytes(dir.file("mine.md")), mine + "\nMY NOTES\n");
  report = run_chainlm(
      dir, "report " + quote(run) + " --out " + quote(dir.file("mine.md")) + " --overwrite");
  EXPECT_EQ(report.exit_code, 0) << report.err;
  EXPECT_EQ(read_bytes(dir.file("mine.md")), mine);
  // The user's picture put where the report's plot was is theirs now (the report linking that
  // name let it be replaced); a dangling link at --out is there too (it was replaced).
  write_bytes(dir.file("mine-loss.png"), png);
  report = run_chainlm(dir, "report " + quote(run) + " --out " + quote(dir.file("mine.md")));
  EXPECT_NE(report.exit_code, 0);
  EXPECT_EQ(read_bytes(dir.file("mine-loss.png")), png);
  fs::create_symlink(dir.file("nowhere.png"), dir.file("link.png"));
  plot = run_chainlm(dir, "plot " + quote(run) + " --out " + quote(dir.file("link.png")));
  EXPECT_NE(plot.exit_code, 0);
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir.file("link.png"))));
  // What the command reads, or what a run or a data directory keeps, is never replaced, not
  // with --overwrite either (the corpus became a tokenizer, the run's log a plot).
  for (const std::string& extra : {std::string(), std::string(" --overwrite")}) {
    auto tok = run_chainlm(dir, "tokenizer train --corpus " + quote(corpus) +
                                    " --vocab-size 300 --out " + quote(corpus) + extra);
    EXPECT_NE(tok.exit_code, 0);
    EXPECT_TRUE(contains(tok.err, "is this command's own input") &&
                !contains(tok.err, "pass --overwrite"))
        << tok.err;
    EXPECT_EQ(read_bytes(corpus), text);
  }
  // A file of a directory given as the corpus, under another name (a hard link).
  fs::create_directories(dir.file("texts"));
  fs::create_hard_link(corpus, dir.file("texts/corpus.txt"));
  auto tok = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("texts")) +
                                  " --vocab-size 300 --out " + quote(corpus) + " --overwrite");
  EXPECT_NE(tok.exit_code, 0);
  EXPECT_TRUE(contains(tok.err, "the same file as this command's input")) << tok.err;
  EXPECT_EQ(read_bytes(corpus), text);
  const std::string metrics = read_bytes(run + "/metrics.jsonl");
  for (const std::string& cmd : {std::string("plot"), std::string("report --no-plot")}) {
    for (const std::string& name : {std::string("metrics.jsonl"), std::string("latest")}) {
      auto r = run_chainlm(
          dir, cmd + " " + quote(run) + " --out " + quote(run + "/" + name) + " --overwrite");
      EXPECT_NE(r.exit_code, 0) << cmd << " " << name;
      EXPECT_TRUE(contains(r.err, "never replaced")) << r.err;
    }
  }
  EXPECT_EQ(read_bytes(run + "/metrics.jsonl"), metrics);
  // A tokenizer.model written into a data directory would become its tokenizer.
  tok = run_chainlm(dir, "tokenizer train --corpus " + quote(corpus) + " --vocab-size 300 --out " +
                             quote(data + "/tokenizer.model") + " --overwrite");
  EXPECT_NE(tok.exit_code, 0);
  EXPECT_TRUE(contains(tok.err, "belongs to the data directory")) << tok.err;
  EXPECT_FALSE(fs::exists(data + "/tokenizer.model"));
}

// Results printed to a file on a full disk (`eval ppl --json > results.json`) were lost with
// exit 0, leaving an empty file a script took for success. /dev/full fails every write.
TEST_F(WorkflowSafety, OutputThatCannotBeWrittenIsAnError) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  for (const std::string& args :
       {"info --model " + quote(run),
        "eval ppl --model " + quote(run) + " --data " + quote(data) + " --threads 1 --json"}) {
    const std::string err = dir.file("err_full.txt");
    const int status = std::system(
        ("'" + std::string(CHAINLM_BINARY) + "' " + args + " >/dev/full 2>" + quote(err)).c_str());
    ASSERT_TRUE(WIFEXITED(status)) << args;
    EXPECT_EQ(WEXITSTATUS(status), 1) << args;
    EXPECT_TRUE(contains(read_bytes(err), "could not be written to standard output"))
        << args << ": " << read_bytes(err);
  }
}

// An --out that is a dangling symbolic link is there already: quantize, export and expand said
// it "appeared while writing" after the whole job, tokenizer train replaced the link. And
// tokenizer train's --out NEW/ made the directory, then called it existing.
TEST_F(WorkflowSafety, OutputsThatAreLinksOrDirectoriesAreRefusedFirst) {
  const std::string run = dir.file("run"), link = dir.file("dangling");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  fs::create_symlink(dir.file("nowhere/x"), link);
  for (const std::string& cmd :
       {"quantize --model " + quote(run) + " --type q8_0 --out " + quote(link),
        "export --model " + quote(run) + " --chains 1 --format hf --out " + quote(link),
        "expand --from " + quote(run) + " --add-chains 1 --out " + quote(link),
        "tokenizer train --corpus " + quote(dir.file("corpus.txt")) + " --vocab-size 300 --out " +
            quote(link)}) {
    auto r = run_chainlm(dir, cmd);
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_TRUE(contains(r.err, "exists")) << cmd << ": " << r.err;
    EXPECT_FALSE(contains(r.err, "appeared")) << cmd << ": " << r.err;
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link))) << cmd;
  }
  auto r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("corpus.txt")) +
                                " --vocab-size 300 --out " + quote(dir.file("newdir") + "/"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "is a directory; name the model file to write")) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("newdir")));
  // The directories made for --out go again when the command then fails on its input.
  r = run_chainlm(dir, "tokenizer train --corpus " + quote(dir.file("no_such.txt")) +
                           " --vocab-size 300 --out " + quote(dir.file("nd/sub/t.model")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir.file("nd"))) << r.err;
  r = run_chainlm(dir, "export --model " + quote(dir.file("no_such_model")) +
                           " --format gguf --out " + quote(dir.file("ng/a/x.gguf")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir.file("ng"))) << r.err;
  write_bytes(dir.file("binary.dat"),
              std::string("\x00\x01\x02\xff\xfe", 5) + std::string(500, '\0'));
  r = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("binary.dat")) +
                           " --out " + quote(dir.file("np/a/data")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir.file("np"))) << r.err;
}

TEST_F(WorkflowSafety, TrainRefusesADirectoryWhoseMetricsAreNotARunsLog) {
  const std::string out = dir.file("mine");
  fs::create_directories(out);
  write_bytes(out + "/metrics.jsonl", "accuracy,0.91\nrecall,0.88\n");
  auto r = run_chainlm(dir, train_args(out, 2));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "is not a chainlm training log")) << r.err;
  EXPECT_EQ(read_bytes(out + "/metrics.jsonl"), "accuracy,0.91\nrecall,0.88\n");
  EXPECT_FALSE(fs::exists(out + "/latest"));
}

TEST_F(WorkflowSafety, ARunStartedWithRelativePathsResumesFromAnywhere) {
  auto a = run_in(dir.path().string(), dir,
                  "train --config config.json --data data --out rel --steps 2 --batch-size 2 --seq-len 8 --quiet");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const std::string run = dir.file("rel");
  const auto state = nlohmann::json::parse(
      read_bytes(run + "/" + trimmed(read_bytes(run + "/latest")) + "/trainer_state.json"));
  EXPECT_TRUE(fs::path(state["options"]["data_dir"].get<std::string>()).is_absolute()) << state["options"];
  auto b = run_in("/", dir, "train --out " + quote(run) + " --resume --steps 4 --quiet");
  EXPECT_EQ(b.exit_code, 0) << b.err;
}

TEST_F(WorkflowSafety, ResumingFromAnOlderCheckpointMovesTheNewerOnesAside) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  ASSERT_TRUE(fs::exists(run + "/step-00000004"));
  const std::string old_step4 = read_bytes(run + "/step-00000004/model.safetensors");
  write_bytes(run + "/latest", "step-00000002\n");  // the user points back
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "moved to") && contains(r.err, "step-00000004")) << r.err;
  std::vector<fs::path> superseded;
  for (const auto& e : fs::directory_iterator(run))
    if (e.path().filename().string().rfind("superseded-", 0) == 0) superseded.push_back(e.path());
  ASSERT_EQ(superseded.size(), 1u);
  EXPECT_EQ(read_bytes((superseded[0] / "step-00000004" / "model.safetensors").string()), old_step4);
  int later = 0;
  for (const auto& j : test::read_metrics_lines(superseded[0].string())) later += j["step"].get<long>() > 2;
  EXPECT_GT(later, 0) << "the metrics lines of steps 3-4 were not kept";
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000004");  // the new step 4
}

// A trainer_state.json whose step is not its checkpoint's (edited, or copied from another):
// the resume went on from that step, moved the checkpoint itself aside as a "later" one and left
// `latest` naming nothing. It is refused before anything moves.
TEST_F(WorkflowSafety, AStateWhoseStepIsNotItsCheckpointsIsRefusedBeforeAnythingMoves) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  const std::string state_path = run + "/step-00000004/trainer_state.json";
  nlohmann::json state = nlohmann::json::parse(read_bytes(state_path));
  state["step"] = 3;
  write_bytes(state_path, state.dump());
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "says step 3 but its checkpoint is step-00000004")) << r.err;
  EXPECT_TRUE(fs::exists(run + "/step-00000004/model.safetensors"));
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000004");
  for (const auto& e : fs::directory_iterator(run))
    EXPECT_NE(e.path().filename().string().rfind("superseded-", 0), 0u) << e.path();
}

// A token past the vocabulary in a shard (two bytes flipped on disk) failed a run only when
// sampling reached it, hours in, and a run that never sampled it passed: train checks every token
// of both shards before its first step.
// A prepare killed while it swapped tokenizers (the old one removed, the new one not yet in):
// train said "holds no tokenizer ... copy the tokenizer in", which mixed shards do not mend.
TEST_F(WorkflowSafety, AnUnfinishedPrepareIsNamedBeforeItsMissingTokenizer) {
  const std::string cut = dir.file("cut");
  fs::copy(data, cut);
  for (const auto& e : fs::directory_iterator(cut))
    if (contains(e.path().filename().string(), "tokenizer")) fs::remove(e.path());
  write_bytes(cut + "/.prepare-incomplete", "");
  auto r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(cut) +
                                " --out " + quote(dir.file("run")) + " --steps 1 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "did not finish") && contains(r.err, "run prepare again") &&
              !contains(r.err, "holds no tokenizer"))
      << r.err;
  EXPECT_FALSE(fs::exists(dir.file("run")));
}

TEST_F(WorkflowSafety, ACorruptTokenInAShardIsFoundBeforeTheFirstStep) {
  const std::string shard = data + "/train.bin";
  const auto at = (std::streamoff)fs::file_size(shard) - 2;  // the last token
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(at);
    f.write("\xff\xff", 2);
  }
  const std::string run = dir.file("run");
  auto r = run_chainlm(dir, train_args(run, 1));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "train.bin: corrupt shard: token 65535 at position") &&
              contains(r.err, "is >= vocab_size 258"))
      << r.err;
  EXPECT_FALSE(fs::exists(run + "/latest"));
}

// 8 bytes of 0xff in the weights: before, `generate` printed "GGGGGGGGGG" and exited 0.
TEST_F(WorkflowSafety, CorruptWeightsAreRefusedNamingAnIntactEarlierCheckpoint) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  const std::string weights = run + "/step-00000004/model.safetensors";
  {
    std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp((std::streamoff)fs::file_size(weights) - 64);
    const char ff[8] = {'\xff', '\xff', '\xff', '\xff', '\xff', '\xff', '\xff', '\xff'};
    f.write(ff, 8);
  }
  auto r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt ab --max-tokens 4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "fails its checksum") && contains(r.err, "corrupt")) << r.err;
  EXPECT_TRUE(contains(r.err, "step-00000002 is intact")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  // Weights cut short (not even a checksum to fail; `latest` gone too): the same pointer.
  fs::resize_file(weights, 1000);
  fs::remove(run + "/latest");
  r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "holds 1000 bytes") && contains(r.err, "step-00000002 is intact"))
      << r.err;
}

// Any file of the resumed checkpoint cut short names the intact earlier checkpoint, as its weights
// do (optimizer.safetensors, trainer_state.json and config.json said only what was wrong).
TEST_F(WorkflowSafety, EveryCutShortCheckpointFileNamesAnIntactEarlierOne) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  for (const std::string name : {"optimizer.safetensors", "trainer_state.json", "config.json"}) {
    const std::string path = run + "/step-00000004/" + name, whole = read_bytes(path);
    write_bytes(path, whole.substr(0, whole.size() / 2));
    auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
    EXPECT_NE(r.exit_code, 0) << name;
    EXPECT_TRUE(
        contains(r.err, "step-00000002 is intact: to resume from it, echo step-00000002 > "))
        << name << ": " << r.err;
    write_bytes(path, whole);
  }
  // An earlier checkpoint is named intact only when all of it is (it was, by its weights, with
  // its optimizer moments cut short: the advice then failed).
  const std::string moments4 = run + "/step-00000004/optimizer.safetensors",
                    moments2 = run + "/step-00000002/optimizer.safetensors";
  const std::string whole4 = read_bytes(moments4), whole2 = read_bytes(moments2);
  write_bytes(moments4, whole4.substr(0, 100));
  write_bytes(moments2, whole2.substr(0, 100));
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(contains(r.err, "is intact")) << r.err;
  write_bytes(moments4, whole4);
  write_bytes(moments2, whole2);
  EXPECT_EQ(run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6").exit_code, 0);
}

// A tokenizer that cannot be read is named as such before anything is trained: the data's (it
// stopped the run at its first checkpoint, the steps before it spent) and a checkpoint's (taken
// for another tokenizer than the data's, with advice to prepare the data with it).
TEST_F(WorkflowSafety, UnreadableTokenizersAreNamedBeforeTraining) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  const std::string tok = run + "/step-00000004/chainlm_tokenizer.json";
  ASSERT_TRUE(fs::exists(tok));
  write_bytes(tok, "{\"kind\": ");
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "the checkpoint's tokenizer cannot be read") &&
              contains(r.err, "step-00000002 is intact"))
      << r.err;
  EXPECT_FALSE(contains(r.err, "another tokenizer")) << r.err;

  const std::string broken = dir.file("broken_data");
  fs::copy(data, broken);
  write_bytes(broken + "/chainlm_tokenizer.json", "{\"kind\": ");
  r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(broken) + " --out " +
                           quote(dir.file("run2")) +
                           " --steps 2 --batch-size 2 --seq-len 16 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "the tokenizer of the data directory cannot be read") &&
              contains(r.err, "nothing was trained"))
      << r.err;
  EXPECT_FALSE(fs::exists(dir.file("run2") + "/metrics.jsonl"));
}

// A checkpoint whose checksums hold but whose weights are not finite (a diverged model saved by
// another tool): refused on load, naming the tensor.
TEST_F(WorkflowSafety, NonFiniteWeightsAreRefusedOnLoad) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  auto model = load_model(run);
  const int i = model->params().find("norm.weight");
  ASSERT_GE(i, 0);
  model->params().value(i)[1] = std::numeric_limits<float>::quiet_NaN();
  const std::string bad = dir.file("bad");
  save_model(*model, bad);
  auto r = run_chainlm(dir, "eval ppl --model " + quote(bad) + " --data " + quote(data + "/val.bin"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "tensor 'norm.weight' holds a non-finite value")) << r.err;
}

// Options that define a run are refused on resume when they differ (they were ignored
// silently); the ones that may change are applied and said.
TEST_F(WorkflowSafety, ResumeRefusesChangedRunOptionsAndSaysWhatChanges) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2) + " --lr 0.001").exit_code, 0);
  write_bytes(dir.file("other.json"), R"({"dim": 32, "n_layers": 1, "n_heads": 2, "ffn_dim": 32,
                                          "vocab_size": 258, "chains": [1, 1], "max_seq_len": 16})");
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --lr 0.002 --batch-size 4 --config " +
                                quote(dir.file("other.json")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "--lr 0.002 (the run's: 0.001)")) << r.err;
  EXPECT_TRUE(contains(r.err, "--batch-size 4 (the run's: 2)")) << r.err;
  EXPECT_TRUE(contains(r.err, "--config")) << r.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000002");
  // A refusal found after the changes are read does not say them first, as if they were made.
  auto frozen = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --freeze-chains 1");
  EXPECT_NE(frozen.exit_code, 0);
  EXPECT_TRUE(contains(frozen.err, "--freeze-chains 1 (the run's: 0) cannot change")) << frozen.err;
  EXPECT_FALSE(contains(frozen.err, "resume: --steps")) << frozen.err;
  // The same values are fine; the run's length and validation interval may change.
  auto ok = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --lr 0.001 --eval-every 1");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(contains(ok.err, "resume: --steps 2 -> 4, --eval-every 2 -> 1")) << ok.err;
}

// Raising --steps on resume keeps the run's cosine schedule and holds its final LR: the LR
// jumped from its floor back up before (2.0e-4 -> 7.1e-4 in the issue's run).
TEST_F(WorkflowSafety, ExtendingARunDoesNotRaiseTheLearningRate) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 6) + " --lr 0.001 --warmup 1").exit_code, 0);
  ASSERT_EQ(run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 9 --quiet").exit_code, 0);
  std::map<long, double> lr;
  for (const auto& j : test::read_metrics_lines(run))
    if (j.contains("lr")) lr[j["step"].get<long>()] = j["lr"].get<double>();
  ASSERT_EQ(lr.size(), 9u);
  for (long s = 3; s <= 6; ++s) EXPECT_LT(lr[s], lr[s - 1]) << "the schedule decays to step 6";
  for (long s = 7; s <= 9; ++s) EXPECT_NEAR(lr[s], 0.0001, 1e-9) << "step " << s << ": the final LR holds";
}

// Shards made with another tokenizer are refused by train --resume and eval ppl, naming both
// (they trained on garbage before: val loss 3.56 -> 11.4; eval reported ppl 1386).
TEST_F(WorkflowSafety, ShardsOfAnotherTokenizerAreRefused) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);  // byte-level data
  const std::string corpus = dir.file("big.txt"), tok = dir.file("tok.model"), other = dir.file("other");
  std::string text;  // 400 documents
  for (int i = 0; i < 400; ++i) text += "a different tokenizer splits this text differently " + std::to_string(i) + "\n\n";
  write_bytes(corpus, text);
  ASSERT_EQ(run_chainlm(dir, "tokenizer train --corpus " + quote(corpus) + " --vocab-size 300 --out " + quote(tok))
                .exit_code, 0);
  ASSERT_EQ(run_chainlm(dir, "prepare --tokenizer " + quote(tok) + " --input " + quote(corpus) + " --out " + quote(other))
                .exit_code, 0);
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --data " + quote(other));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "made with another tokenizer") && contains(r.err, "tokenizer.model") &&
              contains(r.err, "byte"))
      << r.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000002");
  auto e = run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(other + "/val.bin"));
  EXPECT_NE(e.exit_code, 0);
  EXPECT_TRUE(contains(e.err, "made with another tokenizer")) << e.err;
  // The run's own data passes.
  EXPECT_EQ(run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(data + "/val.bin")).exit_code, 0);
}

// Other data of the same tokenizer under --data on resume went on without a word, and nothing in
// the run said which data its steps read. Moved data (a copy) goes on quietly; other data is
// said and logged, and every run records its data's fingerprint.
TEST_F(WorkflowSafety, AResumeOnOtherDataSaysSoAndTheLogRecordsIt) {
  const std::string run = dir.file("run"), moved = dir.file("moved"), other = dir.file("other");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  fs::copy(data, moved);
  test::make_byte_data_dir(test::numbered_lines("quite other text to train on ", 200), other, 0.2);
  auto same = run_chainlm(
      dir, "train --out " + quote(run) + " --resume --steps 3 --quiet --data " + quote(moved));
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_FALSE(contains(same.err, "is not what the run trained on")) << same.err;
  auto changed = run_chainlm(
      dir, "train --out " + quote(run) + " --resume --steps 4 --quiet --data " + quote(other));
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_TRUE(contains(changed.err,
                       "resume: the data in " + other + " is not what the run trained on so far"))
      << changed.err;
  const auto lines = test::read_metrics_lines(run);
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(lines[0].contains("data_fingerprint")) << lines[0].dump();
  // And what ran it, for whoever reruns it.
  EXPECT_EQ(lines[0].value("chainlm_version", ""), kChainlmVersion);
  EXPECT_TRUE(contains(lines[0].value("libraries", ""), "oneDNN ")) << lines[0].dump();
  int changes = 0;
  for (const auto& j : lines) changes += j.contains("data_changed_from");
  EXPECT_EQ(changes, 1);
  // And the run's report says from which step the losses are of other data (it did not).
  ASSERT_EQ(run_chainlm(dir, "report --no-plot " + quote(run)).exit_code, 0);
  const std::string md = read_bytes(run + "/report.md");
  EXPECT_TRUE(
      contains(md, "**Data changed on resume:** the steps from 4 on read other data (`train.bin "))
      << md;
  EXPECT_EQ(md.find("Data changed on resume"), md.rfind("Data changed on resume"))
      << "the resume over moved data is no change";
}

// A symbolic link as --out that leads nowhere said "cannot create the run directory: File
// exists"; one in a loop gave a raw filesystem error.
TEST_F(WorkflowSafety, AnOutThatIsABrokenLinkIsNamedSo) {
  fs::create_directory_symlink(dir.file("nothere"), dir.file("dangling"));
  fs::create_directory_symlink(dir.file("loop2"), dir.file("loop1"));
  fs::create_directory_symlink(dir.file("loop1"), dir.file("loop2"));
  for (const auto& [out, says] : std::vector<std::pair<std::string, std::string>>{
           {dir.file("dangling"),
            "is a symbolic link to " + dir.file("nothere") + ", which does not exist"},
           {dir.file("loop1"), "is a symbolic link that cannot be followed"}}) {
    auto r = run_chainlm(dir, train_args(out, 2));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.err, "train: --out " + out + " " + says)) << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.file("nothere")));
}

// export and expand write a new directory atomically: `--out DIR/` is DIR (it failed and left
// DIR/.tmp--PID behind), and an unwritable place is a one-line error, not a raw filesystem_error.
TEST_F(WorkflowSafety, ExportAndExpandTakeATrailingSlashAndFailCleanly) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  auto e = run_chainlm(dir, "export --model " + quote(run) + " --chains 1 --format hf --no-tokenizer --out " + quote(dir.file("hf") + "/"));
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_TRUE(fs::exists(dir.file("hf") + "/model.safetensors"));
  auto x = run_chainlm(dir, "expand --from " + quote(run) + " --add-chains 1 --out " + quote(dir.file("big") + "/"));
  ASSERT_EQ(x.exit_code, 0) << x.err;
  EXPECT_TRUE(fs::exists(dir.file("big") + "/model.safetensors"));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u) << entry.path();
  for (const std::string& sub : {std::string("hf"), std::string("big")})
    for (const auto& entry : fs::directory_iterator(dir.file(sub)))
      EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u) << entry.path();
  auto bad = run_chainlm(dir, "export --model " + quote(run) + " --chains 1 --format hf --no-tokenizer --out /proc/chainlm-export");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.err, "export: cannot write /proc/chainlm-export")) << bad.err;
  EXPECT_FALSE(contains(bad.err, "filesystem error")) << bad.err;
}

}  // namespace
}  // namespace chainlm
