// A user trial's mistakes with run directories and training options (2026-12-05), each of
// which lost work or passed silently before: checkpoints without a 'latest' file deleted by a
// new run (now resumed from, or moved aside), a resume into a checkpoint nesting a run that pruning
// later deleted, data without a tokenizer failing at the first checkpoint, --steps below the run's
// step doing nothing with exit 0, options out of range stored as given, configs with trailing text
// or repeated keys, report --out replacing any file, and plot/report refusing a log with a torn
// last line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "workflow_fixture.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::trimmed;
using testing::write_bytes;

class RunDirectoryCli : public WorkflowSafety {
 protected:
  // A SentencePiece tokenizer of 280 pieces trained on the fixture's corpus, and data prepared
  // with it in `out`.
  void sentencepiece_data(const std::string& tok, const std::string& out) {
    const std::string corpus = dir.file("corpus.txt");
    ASSERT_EQ(run_chainlm(dir, "tokenizer train --corpus " + quote(corpus) +
                                   " --vocab-size 280 --out " + quote(tok))
                  .exit_code,
              0);
    ASSERT_EQ(run_chainlm(dir, "prepare --tokenizer " + quote(tok) + " --input " + quote(corpus) +
                                   " --out " + quote(out))
                  .exit_code,
              0);
  }
};

// The names of the entries of a directory, sorted: what must not change.
std::string listing(const std::string& path) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string s;
  for (const auto& n : names) s += n + " ";
  return s;
}

// Checkpoints that no 'latest' names (deleted, or a writer killed between its rename and
// `latest`): a new run there pruned them as a killed run's and emptied the log, and the resume
// said "start it again without --resume", which did just that. A resume now goes on from the
// newest (a step-N directory is complete once named), and a new run moves them aside.
TEST_F(RunDirectoryCli, CheckpointsWithoutLatestAreResumedOrMovedAsideNeverPruned) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  fs::remove(run + "/latest");
  const std::string copy = dir.file("copy");
  fs::copy(run, copy, fs::copy_options::recursive);
  const std::string step4 = read_bytes(run + "/step-00000004/model.safetensors"),
                    log = read_bytes(run + "/metrics.jsonl");

  auto resume = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
  EXPECT_EQ(resume.exit_code, 0) << resume.err;
  EXPECT_TRUE(contains(resume.err, "resuming from its newest checkpoint, step-00000004"))
      << resume.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000006");

  auto fresh = run_chainlm(dir, train_args(copy, 2));
  EXPECT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_TRUE(contains(fresh.err, "step-00000002, step-00000004") &&
              contains(fresh.err, "nothing was deleted"))
      << fresh.err;
  std::vector<fs::path> aside;
  for (const auto& e : fs::directory_iterator(copy))
    if (e.path().filename().string().rfind("superseded-", 0) == 0) aside.push_back(e.path());
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(read_bytes((aside[0] / "step-00000004" / "model.safetensors").string()), step4);
  EXPECT_EQ(read_bytes((aside[0] / "metrics.jsonl").string()), log);
  EXPECT_EQ(trimmed(read_bytes(copy + "/latest")), "step-00000002");

  // A directory of the user's named like a checkpoint is neither resumed from (it was announced
  // as the newest checkpoint, then refused) nor called a checkpoint when a new run moves it aside
  // (a trial).
  fs::remove(run + "/latest");
  fs::create_directories(run + "/step-00000009");
  write_bytes(run + "/step-00000009/notes.txt", "mine");
  resume = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 7");
  EXPECT_EQ(resume.exit_code, 0) << resume.err;
  EXPECT_TRUE(contains(resume.err,
                       "resuming from its newest checkpoint, step-00000006 (step-00000009: named "
                       "like checkpoints, but without config.json"))
      << resume.err;
  const std::string mine = dir.file("mine");
  fs::create_directories(mine + "/step-00000005");
  write_bytes(mine + "/step-00000005/notes.txt", "mine");
  fresh = run_chainlm(dir, train_args(mine, 2));
  EXPECT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_TRUE(contains(fresh.err, "step-00000005, named like checkpoints but holding none"))
      << fresh.err;
  EXPECT_FALSE(contains(fresh.err, "the checkpoints no 'latest' named")) << fresh.err;
}

// A checkpoint whose tokenizer was removed names the intact earlier one a resume can go on from,
// as a checkpoint with an unreadable tokenizer does (a trial: only "copy that tokenizer into").
TEST_F(RunDirectoryCli, ACheckpointWithoutItsTokenizerNamesTheIntactEarlierOne) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4) + " --save-every 2").exit_code, 0);
  std::vector<fs::path> tokenizer_files;
  for (const auto& e : fs::directory_iterator(run + "/step-00000004"))
    if (e.path().filename().string().find("tokenizer") != std::string::npos)
      tokenizer_files.push_back(e.path());
  ASSERT_FALSE(tokenizer_files.empty());
  for (const fs::path& f : tokenizer_files) fs::remove(f);
  auto resume = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6");
  EXPECT_EQ(resume.exit_code, 1);
  EXPECT_TRUE(contains(resume.err, "holds no tokenizer") && contains(resume.err, "step-00000002"))
      << resume.err;
}

// --out naming a checkpoint: the resume wrote the run's checkpoints inside it, where the run's
// next pruning deleted them; a new run there was accepted too.
TEST_F(RunDirectoryCli, ACheckpointIsNotARunDirectory) {
  const std::string run = dir.file("run"), ckpt = run + "/step-00000002";
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  const std::string before = listing(ckpt);
  auto resume = run_chainlm(dir, "train --out " + quote(ckpt + "/") + " --resume --steps 4");
  EXPECT_NE(resume.exit_code, 0);
  EXPECT_TRUE(contains(resume.err, "is a checkpoint, not a run directory") &&
              contains(resume.err, "chainlm train --out " + run + " --resume"))
      << resume.err;
  auto fresh = run_chainlm(dir, train_args(ckpt, 2));
  EXPECT_NE(fresh.exit_code, 0);
  EXPECT_TRUE(contains(fresh.err, "is a checkpoint, not a run directory")) << fresh.err;
  EXPECT_EQ(listing(ckpt), before);
  // A directory that merely holds a config file is no checkpoint: a run may start there.
  const std::string mine = dir.file("mine");
  fs::create_directories(mine);
  fs::copy_file(config, mine + "/config.json");
  EXPECT_EQ(run_chainlm(dir, train_args(mine, 2)).exit_code, 0);
}

// --resume on a directory without checkpoints: one no run ever used is named as such (it was
// told "the run stopped before its first checkpoint"), and one a run is training into, still
// before its first checkpoint, gets the lock's message (it was told to start again).
TEST_F(RunDirectoryCli, AResumeWithoutCheckpointsSaysWhy) {
  const std::string other = dir.file("other");
  fs::create_directories(other);
  write_bytes(other + "/notes.txt", "mine");
  auto r = run_chainlm(dir, "train --out " + quote(other) + " --resume --steps 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "holds no chainlm run (no checkpoint, no 'latest' file)")) << r.err;
  EXPECT_EQ(listing(other), "notes.txt ");
  // --out the data directory itself: refused, the data as it was.
  const std::string data_before = listing(data);
  r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data) + " --out " +
                           quote(data + "/") + " --steps 2 --batch-size 2 --seq-len 8 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "is the data directory")) << r.err;
  EXPECT_EQ(listing(data), data_before);

  const std::string run = dir.file("run");
  fs::create_directories(run);
  write_bytes(run + "/.lock", "");
  const int fd = ::open(run.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // as a training process holds it
  r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "another process is training into " + run)) << r.err;
  ::close(fd);
  // The .lock file removed by hand ("a stale lock") let a second trainer in beside the first.
  const std::string trained = dir.file("trained");
  ASSERT_EQ(
      run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data) + " --out " +
                           quote(trained) + " --steps 2 --batch-size 2 --seq-len 8 --quiet")
          .exit_code,
      0);
  const int held = ::open(trained.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(::flock(held, LOCK_EX | LOCK_NB), 0);
  fs::remove(trained + "/.lock");
  r = run_chainlm(dir, "train --out " + quote(trained) + " --resume --steps 4 --quiet");
  ::close(held);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "another process is training into " + trained)) << r.err;
  EXPECT_FALSE(fs::exists(trained + "/step-00000004"));
  r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 2");  // lock released
  EXPECT_TRUE(contains(r.err, "the run stopped before its first checkpoint")) << r.err;
}

// A run that stopped before its first checkpoint (here a loss gone non-finite) leaves a log that
// is its diagnosis: a new run in that directory moves it aside (it was replaced silently).
TEST_F(RunDirectoryCli, ANewRunKeepsTheLogOfAnEarlierOneWithoutCheckpoints) {
  const std::string run = dir.file("run");
  auto failed =
      run_chainlm(dir, train_args(run, 6) + " --lr 1e30 --warmup 0 --grad-clip 0 --save-every 6");
  ASSERT_NE(failed.exit_code, 0) << failed.err;
  const std::string log = read_bytes(run + "/metrics.jsonl");
  ASSERT_TRUE(contains(log, "\"step\":1")) << log;
  auto fresh = run_chainlm(dir, train_args(run, 2));
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_TRUE(contains(
      fresh.err, "the log of an earlier run that stopped before its first checkpoint was moved to"))
      << fresh.err;
  std::string moved;
  for (const auto& e : fs::directory_iterator(run))
    if (e.path().filename().string().rfind("superseded-", 0) == 0)
      moved = read_bytes((e.path() / "metrics.jsonl").string());
  EXPECT_EQ(moved, log);
  // A log with only a run's first line (it stopped before a step) is just replaced.
  const std::string other = dir.file("other");
  fs::create_directories(other);
  write_bytes(other + "/metrics.jsonl", "{\"step\": 0, \"total_params\": 1}\n");
  fresh = run_chainlm(dir, train_args(other, 2));
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_FALSE(contains(listing(other), "superseded")) << listing(other);
}

// Every checkpoint carries the data's tokenizer: without one the run trained up to its first
// checkpoint and then failed, losing those steps (and the error suggested `train --tokenizer`,
// which does not exist). A checkpoint without its tokenizer let any data's through unchecked.
TEST_F(RunDirectoryCli, ATokenizerIsRequiredBeforeTheFirstStep) {
  const std::string bare = dir.file("bare"), run = dir.file("run");
  fs::create_directories(bare);
  for (const char* f : {"train.bin", "val.bin"}) fs::copy_file(data + "/" + f, bare + "/" + f);
  auto r =
      run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(bare) + " --out " +
                           quote(run) + " --steps 4 --batch-size 2 --seq-len 8 --eval-every 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "holds no tokenizer") && contains(r.err, "nothing was trained"))
      << r.err;
  EXPECT_FALSE(contains(r.err, "--tokenizer")) << r.err;
  EXPECT_FALSE(contains(r.err, "step 1 ")) << "no step may run: " << r.err;
  EXPECT_FALSE(fs::exists(run + "/metrics.jsonl"));

  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  fs::remove(run + "/step-00000002/chainlm_tokenizer.json");
  auto resume = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4");
  EXPECT_NE(resume.exit_code, 0);
  EXPECT_TRUE(contains(resume.err, "holds no tokenizer") && contains(resume.err, "step-00000002"))
      << resume.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000002");
}

// A data directory given where a model goes was called "neither a checkpoint nor a run".
TEST_F(RunDirectoryCli, ADataDirectoryGivenAsAModelIsNamedSo) {
  for (const std::string& cmd : {"train --init " + quote(data) + " --data " + quote(data) +
                                     " --out " + quote(dir.file("run")) + " --steps 1",
                                 "generate --model " + quote(data) + " --prompt a"}) {
    auto r = run_chainlm(dir, cmd);
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_TRUE(
        contains(r.err, "it is a data directory (chainlm prepare's token shards), not a model"))
        << cmd << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.file("run")));
  // And the other way round: a run or a checkpoint as --data ("holds no tokenizer ... copy
  // it"), an empty directory, and prepare --overwrite into a checkpoint (which replaced its
  // tokenizer with the data's).
  const std::string run = dir.file("run"), empty = dir.file("empty");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  fs::create_directories(empty);
  for (const auto& [data_arg, says] : std::vector<std::pair<std::string, std::string>>{
           {run, "is a training run, not a data directory"},
           {run + "/step-00000002", "is a model checkpoint, not a data directory"},
           {empty, "holds no train.bin"},
           {dir.file("corpus.txt"),
            "is a file; --data takes the directory chainlm prepare makes"}}) {
    auto r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data_arg) +
                                  " --out " + quote(dir.file("other")) +
                                  " --steps 1 --batch-size 2 --seq-len 8");
    EXPECT_NE(r.exit_code, 0) << data_arg;
    EXPECT_TRUE(contains(r.err, says)) << r.err;
  }
  const std::string before = listing(run + "/step-00000002");
  auto p = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("corpus.txt")) +
                                " --out " + quote(run + "/step-00000002") + " --overwrite");
  EXPECT_NE(p.exit_code, 0);
  EXPECT_TRUE(contains(p.err, "is a model checkpoint, not a data directory")) << p.err;
  EXPECT_EQ(listing(run + "/step-00000002"), before);
  // A run without `latest` (removed by hand, or killed before its first checkpoint, with its log
  // only) is a run still: prepare --overwrite replaced its files with shards.
  fs::remove(run + "/latest");
  const std::string log_only = dir.file("log-only");
  fs::create_directories(log_only);
  write_bytes(log_only + "/metrics.jsonl", "{\"step\": 1}\n");
  for (const std::string& out : {run, log_only}) {
    const std::string files = listing(out);
    auto q = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("corpus.txt")) +
                                  " --out " + quote(out) + " --overwrite");
    EXPECT_NE(q.exit_code, 0) << out;
    EXPECT_TRUE(contains(q.err, "is a training run, not a data directory")) << q.err;
    EXPECT_EQ(listing(out), files) << out;
  }
}

// --steps counts from the run's start: below the run's step it did nothing and exited 0 after
// saying "resuming from step 4 to 2"; a finished run resumed said nothing of being finished.
TEST_F(RunDirectoryCli, StepsBelowTheRunAreRefusedAndAFinishedRunSaysSo) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 4)).exit_code, 0);
  const std::string log = read_bytes(run + "/metrics.jsonl");
  auto back = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 2");
  EXPECT_NE(back.exit_code, 0);
  EXPECT_TRUE(contains(back.err, "--steps 2 is below the step the run is at (4")) << back.err;
  // Nothing is written, not even the lock (a finished run on a read-only copy failed writing it).
  fs::remove(run + "/.lock");
  const std::string before = listing(run);
  auto done = run_chainlm(dir, "train --out " + quote(run) + " --resume");
  EXPECT_EQ(done.exit_code, 0) << done.err;
  EXPECT_TRUE(contains(done.err, "already at step 4, its last: nothing to train")) << done.err;
  EXPECT_FALSE(contains(done.err, "trainable:")) << "no setup lines after it: " << done.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000004");
  EXPECT_EQ(read_bytes(run + "/metrics.jsonl"), log);
  EXPECT_EQ(listing(run), before);
  // A writer killed as it removed an old checkpoint at the run's end left it behind; resuming
  // the finished run (a requeued job) removes it, as resuming an unfinished one does.
  fs::create_directories(run + "/.old-step-00000002.99999");
  done = run_chainlm(dir, "train --out " + quote(run) + " --resume");
  EXPECT_EQ(done.exit_code, 0) << done.err;
  EXPECT_FALSE(fs::exists(run + "/.old-step-00000002.99999"));
  fs::remove(run + "/.lock");
  EXPECT_EQ(listing(run), before);
  // Resumed from an earlier checkpoint with nothing to train, it moved the later ones aside.
  write_bytes(run + "/latest", "step-00000002\n");
  const std::string from2 = listing(run);
  done = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 2");
  EXPECT_EQ(done.exit_code, 0) << done.err;
  EXPECT_TRUE(contains(done.err,
                       "already at step 2, the checkpoint `latest` names: nothing to train. A "
                       "larger --steps trains on from it and moves the later checkpoints "
                       "(step-00000004) aside"))
      << done.err;
  EXPECT_EQ(read_bytes(run + "/metrics.jsonl"), log);
  EXPECT_EQ(listing(run), from2);
}

// A path a filesystem allows but JSON cannot hold (bytes that are not UTF-8): train ran every
// step to its first checkpoint and failed there ("invalid UTF-8 byte"), losing them; prepare
// tokenized the whole corpus and failed writing meta.json, naming no file.
TEST_F(RunDirectoryCli, PathsThatAreNotUtf8AreRefusedOrRecordedReplaced) {
  const std::string odd = dir.file("data\xff");
  fs::copy(data, odd);
  const std::string run = dir.file("run");
  auto r =
      run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(odd) + " --out " +
                           quote(run) + " --steps 2 --batch-size 2 --seq-len 8 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "train: --data is not valid UTF-8 (byte ")) << r.err;
  EXPECT_FALSE(fs::exists(run));
  const std::string text = dir.file("corpus\xfe.txt");
  fs::copy(dir.file("corpus.txt"), text);
  auto p = run_chainlm(
      dir, "prepare --tokenizer byte --input " + quote(text) + " --out " + quote(dir.file("d")));
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const auto meta = nlohmann::json::parse(read_bytes(dir.file("d/meta.json")));
  EXPECT_TRUE(contains(meta.at("sources").at(0).get<std::string>(), "corpus\xef\xbf\xbd.txt"))
      << meta.dump();
}

// Each was accepted and stored as given (a --min-lr-ratio of 2 raised the LR over the run).
TEST_F(RunDirectoryCli, OptionsOutOfRangeAreRefusedNamingTheFlag) {
  const std::string run = dir.file("run");
  for (const std::string opt : {"--min-lr-ratio 2",
                                "--min-lr-ratio -0.5",
                                "--weight-decay -1",
                                "--grad-clip -1",
                                "--seq-len -5",
                                "--warmup -5",
                                "--lr-schedule-steps -3",
                                "--eval-every -1",
                                "--save-every -1",
                                "--eval-windows -2",
                                "--lr nan",
                                "--chain-loss-weights 0,0",
                                "--chain-loss-weights -1,2",
                                "--seed -1",
                                "--bucket-mb -1",
                                "--bucket-mb 0",
                                "--bucket-mb nan",
                                "--bucket-mb 1e-30",
                                "--lr 1e39",
                                "--lr 1e-46",
                                "--grad-clip 1e39"}) {
    auto r = run_chainlm(dir, train_args(run, 2) + " " + opt);
    EXPECT_NE(r.exit_code, 0) << opt;
    const std::string flag = opt.substr(0, opt.find(' '));
    EXPECT_TRUE(contains(r.err, flag)) << opt << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_FALSE(fs::exists(run)) << opt;
  }
  // 1e39 became inf in the fp32 option, and was refused as "--lr inf".
  auto huge = run_chainlm(dir, train_args(run, 2) + " --lr 1e39");
  EXPECT_TRUE(contains(huge.err, "--lr: 1e39 is beyond an fp32 number's range")) << huge.err;
  // 1e-46 underflowed to 0 and was refused as "--lr 0".
  auto tiny = run_chainlm(dir, train_args(run, 2) + " --lr 1e-46");
  EXPECT_TRUE(contains(tiny.err, "--lr: 1e-46 is below an fp32 number's smallest")) << tiny.err;
  // A micro-batch that does not divide the batch names one that does.
  std::string args = train_args(run, 2);
  args.replace(args.find("--batch-size 2"), 14, "--batch-size 6 --micro-batch 4");
  auto micro = run_chainlm(dir, args);
  EXPECT_NE(micro.exit_code, 0);
  EXPECT_TRUE(contains(micro.err, "must be a multiple of --micro-batch 4; pass --micro-batch 3"))
      << micro.err;
  EXPECT_FALSE(fs::exists(run + "/metrics.jsonl"));
  // The documented special values stay valid: 0 = only at the end, -1 = the default warmup.
  auto ok = run_chainlm(
      dir,
      "train --config " + quote(config) + " --data " + quote(data) + " --out " + quote(run) +
          " --steps 2 --batch-size 2 --seq-len 8 --quiet --eval-every 0 --warmup -1 --grad-clip 0");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_FALSE(contains(ok.err, "warning")) << ok.err;
  auto inf = run_chainlm(dir, train_args(dir.file("inf"), 2) + " --lr inf");
  EXPECT_TRUE(contains(inf.err, "--lr inf must be a finite number above 0")) << inf.err;
  // A warmup as long as the schedule leaves no cosine decay; said, with what happens instead.
  struct Warm {
    std::string flags, says;
  };
  for (const Warm& w : std::vector<Warm>{
           {" --warmup 2",
            "--warmup 2 is not below the schedule's 2 steps (--lr-schedule-steps, else --steps): "
            "there "
            "is no cosine decay: the learning rate climbs to --lr 0.001 over 2 steps and the run "
            "ends there"},
           {" --warmup 5",
            "the run ends while the learning rate is still warming up, at 2/5 of --lr 0.001"},
           {" --warmup 1 --lr-schedule-steps 1 --lr 0.002",
            "climbs to --lr 0.002 over 1 step, then drops at once to its final value "
            "(--min-lr-ratio)"}}) {
    fs::remove_all(dir.file("warm"));
    auto long_warmup = run_chainlm(dir, train_args(dir.file("warm"), 2) + w.flags);
    EXPECT_EQ(long_warmup.exit_code, 0) << long_warmup.err;
    EXPECT_TRUE(contains(long_warmup.err, w.says)) << w.flags << ": " << long_warmup.err;
  }
  // Freezing chains of a new model keeps them random: allowed, said.
  auto frozen = run_chainlm(dir, train_args(dir.file("frozen"), 2) + " --freeze-chains 1");
  EXPECT_EQ(frozen.exit_code, 0) << frozen.err;
  EXPECT_TRUE(
      contains(frozen.err,
               "warning: --freeze-chains 1 on a new model (--config, no --init) keeps the frozen "
               "weights at their random initialization"))
      << frozen.err;
}

// A chain past the last weighted sub-model is left as it is (not even decayed): info says so
// beside the trainable count that leaves it out.
TEST_F(RunDirectoryCli, InfoNamesTheChainsNoSubModelTrains) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2) + " --chain-loss-weights 1,0").exit_code, 0);
  auto info = run_chainlm(dir, "info --model " + quote(run));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_TRUE(
      contains(info.out, "step 2, nothing frozen, chain 2 unused (no loss weight): trainable"))
      << info.out;
}

// nlohmann's stream reader stopped after the first value, and a repeated key took its last
// value: `{...} garbage`, `{...}{...}` and {"dim": 16, "dim": 32} all trained.
TEST_F(RunDirectoryCli, ConfigsAreReadWhole) {
  const std::string run = dir.file("run");
  const std::string body =
      R"("n_layers": 1, "n_heads": 2, "ffn_dim": 32, "vocab_size": 258, "max_seq_len": 16)";
  const std::pair<std::string, std::string> cases[] = {
      {"{\"dim\": 16, " + body + "} garbage", "expected end of input"},
      {"{\"dim\": 16, " + body + "}{\"dim\": 8}", "expected end of input"},
      {"{\"dim\": 16, \"dim\": 32, " + body + "}", "key 'dim' is given twice"},
      {"{\"dim\": 16, \"n_kv_heads\": 0, " + body + "}", "'n_kv_heads' must be positive (got 0)"}};
  for (const auto& [text, why] : cases) {
    write_bytes(dir.file("c.json"), text);
    auto r =
        run_chainlm(dir, "train --config " + quote(dir.file("c.json")) + " --data " + quote(data) +
                             " --out " + quote(run) + " --steps 1 --batch-size 2 --seq-len 8");
    EXPECT_NE(r.exit_code, 0) << text;
    EXPECT_TRUE(contains(r.err, why) && !contains(r.err, "[json.exception"))
        << text << ": " << r.err;
  }
  // A directory as --config: it said "basic_filebuf::underflow error reading the file".
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  auto d = run_chainlm(dir, "train --config " + quote(run + "/step-00000002") + " --data " +
                                quote(data) + " --out " + quote(dir.file("other")) + " --steps 1");
  EXPECT_NE(d.exit_code, 0);
  EXPECT_TRUE(contains(d.err, "is a directory, not a model config") && contains(d.err, "--init"))
      << d.err;
}

// report --out replaced any file with markdown: the run's metrics.jsonl, a checkpoint's
// config.json, the user's notes, and a non-PNG beside it named like its plot.
TEST_F(RunDirectoryCli, ReportReplacesOnlyAnEarlierReport) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  const std::string log = read_bytes(run + "/metrics.jsonl");
  auto r = run_chainlm(
      dir, "report " + quote(run) + " --no-plot --out " + quote(run + "/metrics.jsonl"));
  EXPECT_NE(r.exit_code, 0);
  // Its own input: never replaced, so --overwrite is not offered (it replaced the log).
  EXPECT_TRUE(contains(r.err, "this command's own input") && !contains(r.err, "pass --overwrite"))
      << r.err;
  EXPECT_EQ(read_bytes(run + "/metrics.jsonl"), log);
  write_bytes(dir.file("notes-loss.png"), "not a picture");
  auto png = run_chainlm(dir, "report " + quote(run) + " --out " + quote(dir.file("notes.md")));
  EXPECT_NE(png.exit_code, 0);
  EXPECT_TRUE(contains(png.err, "not a plot chainlm drew")) << png.err;
  EXPECT_EQ(read_bytes(dir.file("notes-loss.png")), "not a picture");
  EXPECT_FALSE(fs::exists(dir.file("notes.md")));
  // Its own report is replaced; another file with --overwrite.
  const std::string md = dir.file("r.md");
  ASSERT_EQ(run_chainlm(dir, "report " + quote(run) + " --no-plot --out " + quote(md)).exit_code,
            0);
  EXPECT_EQ(run_chainlm(dir, "report " + quote(run) + " --no-plot --out " + quote(md)).exit_code,
            0);
  write_bytes(dir.file("n.md"), "mine");
  EXPECT_EQ(run_chainlm(dir, "report " + quote(run) + " --no-plot --overwrite --out " +
                                 quote(dir.file("n.md")))
                .exit_code,
            0);
  EXPECT_TRUE(contains(read_bytes(dir.file("n.md")), "# Training report"));
}

// A log whose last line a killed writer left unfinished: plot and report refused the whole log
// (train --resume already dropped such a line). A bad line that is finished is still an error.
TEST_F(RunDirectoryCli, ATornLastLogLineIsSkippedWithAWarning) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  const std::string log = read_bytes(run + "/metrics.jsonl");
  write_bytes(run + "/metrics.jsonl", log + "{\"step\": 3, \"chain_loss\": [null, 3.8");
  auto r = run_chainlm(dir, "report " + quote(run) + " --no-plot --out " + quote(dir.file("r.md")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "skipped an unfinished last line")) << r.err;
  write_bytes(run + "/metrics.jsonl", log + "{\"step\": 3, \"chain_loss\": [null, 3.8\n");
  auto bad =
      run_chainlm(dir, "report " + quote(run) + " --no-plot --out " + quote(dir.file("r.md")));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.err, "not valid JSON")) << bad.err;
}

// The same file as --input and --val-input made the validation split a copy of training data;
// a directory as tokenizer train's --out failed only after training, even with --overwrite.
TEST_F(RunDirectoryCli, PrepareAndTokenizerTrainRefuseOutputsThatCannotBeRight) {
  const std::string corpus = dir.file("corpus.txt");
  auto p = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(corpus) + " --val-input " +
                                quote(dir.path().string() + "/./corpus.txt") + " --out " +
                                quote(dir.file("p")));
  EXPECT_NE(p.exit_code, 0);
  EXPECT_TRUE(contains(p.err, "is also read by --input")) << p.err;
  EXPECT_FALSE(fs::exists(dir.file("p") + "/train.bin"));
  // --val-input's files are recorded in meta.json as sources are: absolute, directories listed.
  fs::create_directories(dir.file("vd"));
  write_bytes(dir.file("vd/x.txt"), "v1\n\nv2\n");
  auto vi = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(corpus) + " --val-input " +
                                 quote(dir.file("vd")) + " --out " + quote(dir.file("pv")));
  ASSERT_EQ(vi.exit_code, 0) << vi.err;
  const auto meta = nlohmann::json::parse(read_bytes(dir.file("pv/meta.json")));
  EXPECT_EQ(meta["val_sources"],
            nlohmann::json::array({fs::absolute(dir.file("vd/x.txt")).string()}))
      << meta.dump();
  // A directory above --out that does not exist is made (it failed after the training).
  auto deep =
      run_chainlm(dir, "tokenizer train --corpus " + quote(corpus) + " --vocab-size 280 --out " +
                           quote(dir.file("new/deeper/t.model")));
  EXPECT_EQ(deep.exit_code, 0) << deep.err;
  EXPECT_TRUE(fs::is_regular_file(dir.file("new/deeper/t.model")));
  fs::create_directories(dir.file("tokdir"));
  auto t = run_chainlm(dir, "tokenizer train --corpus " + quote(corpus) +
                                " --vocab-size 300 --overwrite --out " + quote(dir.file("tokdir")));
  EXPECT_NE(t.exit_code, 0);
  EXPECT_TRUE(contains(t.err, "is a directory") && contains(t.err, "tokenizer.model")) << t.err;
}

// prepare --overwrite over data of another tokenizer left the earlier tokenizer's file beside
// the new one; re-preparing with the directory's own tokenizer must keep it.
TEST_F(RunDirectoryCli, PrepareOverwriteReplacesTheTokenizerFiles) {
  const std::string corpus = dir.file("corpus.txt"), tok = dir.file("t.model"), out = dir.file("p");
  ASSERT_NO_FATAL_FAILURE(sentencepiece_data(tok, out));
  auto same = run_chainlm(dir, "prepare --tokenizer " + quote(out) + " --input " + quote(corpus) +
                                   " --out " + quote(out) + " --overwrite");
  EXPECT_EQ(same.exit_code, 0) << same.err;
  EXPECT_EQ(read_bytes(out + "/tokenizer.model"), read_bytes(tok));
  auto to_byte = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(corpus) + " --out " +
                                      quote(out) + " --overwrite");
  ASSERT_EQ(to_byte.exit_code, 0) << to_byte.err;
  EXPECT_FALSE(fs::exists(out + "/tokenizer.model"));
  // The files it removed and did not replace are named (one could have been the user's).
  EXPECT_TRUE(contains(to_byte.err, "removed the earlier tokenizer's tokenizer.model"))
      << to_byte.err;
  // Another prepare writing there (it holds the directory's flock): refused, nothing changed.
  const std::string before = read_bytes(out + "/train.bin");
  const int fd = ::open(out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  // Its temporary shards there: the second said it was "replacing the files of a prepare that
  // did not finish" before it found the lock.
  write_bytes(out + "/train.bin.tmp.1.0", "shard in progress");
  write_bytes(out + "/.prepare-incomplete", "");
  for (const std::string overwrite : {" --overwrite", ""}) {
    auto second =
        run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("corpus.txt")) +
                             " --out " + quote(out) + " --val-fraction 0.5" + overwrite);
    EXPECT_NE(second.exit_code, 0);
    EXPECT_TRUE(contains(second.err, "another prepare is writing into " + out)) << second.err;
    EXPECT_FALSE(contains(second.err, "did not finish")) << second.err;
  }
  ::close(fd);
  EXPECT_TRUE(fs::exists(out + "/train.bin.tmp.1.0"));
  fs::remove(out + "/train.bin.tmp.1.0");
  fs::remove(out + "/.prepare-incomplete");
  EXPECT_EQ(read_bytes(out + "/train.bin"), before);
  EXPECT_TRUE(fs::exists(out + "/chainlm_tokenizer.json"));
  // JSONL records of blank text are no documents: now said, so the counts add up.
  write_bytes(dir.file("r.jsonl"), "{\"text\": \"   \"}\n{\"text\": \"x\"}\n{\"text\": \"y\"}\n");
  auto blank = run_chainlm(dir, "prepare --tokenizer byte --input " + quote(dir.file("r.jsonl")) +
                                    " --out " + quote(dir.file("pr")));
  EXPECT_EQ(blank.exit_code, 0) << blank.err;
  EXPECT_TRUE(contains(blank.err, "skipped 1 JSONL record whose text is empty or only whitespace"))
      << blank.err;
}

// A run from --init carries the model's tokenizer files, chat template and EOS list included, in
// every checkpoint, resumed or not (it took the data directory's, which prepare had made from
// the tokenizer alone: a chat model tuned this way came out a base model).
TEST_F(RunDirectoryCli, ARunFromInitCarriesTheModelsTokenizerFiles) {
  const std::string tok = dir.file("t.model"), sp = dir.file("sp");
  ASSERT_NO_FATAL_FAILURE(sentencepiece_data(tok, sp));
  const std::string cfg = dir.file("sp.json");
  write_bytes(cfg, R"({"dim": 16, "n_layers": 1, "n_heads": 2, "ffn_dim": 32, "vocab_size": 280,
                      "chains": [1, 1], "max_seq_len": 16})");
  const std::string base = dir.file("base"),
                    args = " --data " + quote(sp) + " --batch-size 2 --seq-len 8 --quiet";
  ASSERT_EQ(run_chainlm(
                dir, "train --config " + quote(cfg) + " --out " + quote(base) + " --steps 2" + args)
                .exit_code,
            0);
  const std::string model = base + "/step-00000002";
  const std::string jinja = "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}";
  write_bytes(model + "/chat_template.jinja", jinja);
  write_bytes(model + "/generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [2, 1]})");
  const std::string tuned = dir.file("tuned");
  auto r = run_chainlm(
      dir, "train --init " + quote(model) + " --out " + quote(tuned) + " --steps 2" + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_bytes(tuned + "/step-00000002/chat_template.jinja"), jinja);
  r = run_chainlm(dir, "train --out " + quote(tuned) + " --resume --steps 4 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_bytes(tuned + "/step-00000004/chat_template.jinja"), jinja);
  EXPECT_EQ(nlohmann::json::parse(
                read_bytes(tuned + "/step-00000004/generation_config.json"))["eos_token_id"],
            nlohmann::json::array({2, 1}));
  EXPECT_FALSE(fs::exists(sp + "/chat_template.jinja"));  // the data's directory is as it was
}

// CLI11's usage errors were two lines ("... Run with --help for more information.").
TEST_F(RunDirectoryCli, UsageErrorsAreOneLine) {
  for (const std::string args :
       {"train --steps abc --out x", "train --out x --no-such-flag", "train"}) {
    auto r = run_chainlm(dir, args);
    EXPECT_EQ(r.exit_code, 2) << args;  // a usage error's, by convention (CLI11's were 101-115)
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(contains(r.err, "chainlm train --help")) << r.err;
  }
  // A nested command is named in the hint; a bound reads as one (CLI11's named a 300-digit range).
  auto bound = run_chainlm(dir, "bench decode --config " + quote(config) + " --chains 0");
  EXPECT_EQ(bound.exit_code, 2);
  EXPECT_TRUE(contains(bound.err, "--chains: must be at least 1 (got 0)") &&
              contains(bound.err, "chainlm bench decode --help"))
      << bound.err;
  auto unknown = run_chainlm(dir, "trian --steps 3");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(contains(unknown.err, "unknown command 'trian'") &&
              contains(unknown.err, "train, generate"))
      << unknown.err;
  auto help = run_chainlm(dir, "train --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(contains(help.out, "--resume")) << help.out;
}

}  // namespace
}  // namespace chainlm
