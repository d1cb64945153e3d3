// The trainer's checkpoint protocol in process (docs/reliability.md, Crash safety): what a
// killed writer leaves is removed, never loaded; a second trainer cannot share a run
// directory; a checkpoint directory `latest` never named is replaced, later ones pruned; the
// writer refuses non-finite weights. tests/cli/crash_safety_test.cpp kills the real binary.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "train/run_directory.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

ModelConfig tiny_config() {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 64;
  c.vocab_size = 258;
  c.chains = {1, 1};
  c.kv_share = true;
  c.max_seq_len = 32;
  validate_config(c, "test");
  return c;
}

class CheckpointSafety : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(300, "a cat sat on the mat ");
  }
  TrainOptions options(const std::string& out, long steps) const {
    TrainOptions o;
    o.data_dir = data;
    o.out_dir = out;
    o.steps = steps;
    o.batch_size = 2;
    o.seq_len = 16;
    o.eval_every = 0;
    o.eval_windows = 2;
    o.save_every = 1;
    o.quiet = true;
    return o;
  }
  // A run of 2 steps in `run`, `touch` done to it, then resumed to `steps` keeping 1 checkpoint:
  // what the resumed run wrote to stderr.
  template <typename Touch>
  std::string resume_keeping_one(const fs::path& run, long steps, Touch touch) const {
    {
      Model m(tiny_config());
      m.init_random(1);
      Trainer t(m, options(run.string(), 2));
      t.run();
    }
    touch();
    Model m(tiny_config());
    m.init_random(1);
    TrainOptions o = options(run.string(), steps);
    o.keep_checkpoints = 1;
    Trainer t(m, o);
    t.restore(run.string());
    ::testing::internal::CaptureStderr();
    t.run();
    return ::testing::internal::GetCapturedStderr();
  }
  // Trains 3 steps into `run`, a checkpoint a step, calling `hook` after each step (the sampler's
  // place): the world changing under a running trainer.
  void run_with_hook(const fs::path& run, const std::function<void()>& hook) const {
    Model m(tiny_config());
    m.init_random(1);
    TrainOptions o = options(run.string(), 3);
    o.sample_every = 1;
    Trainer t(m, o);
    t.set_sampler([&](const Model&) {
      hook();
      return nlohmann::json::array();
    });
    t.run();
  }
};

TEST_F(CheckpointSafety, LeftoversOfAKilledWriterAreRemovedNotLoaded) {
  const fs::path run = dir.file("run");
  fs::create_directories(run / ".tmp-step-00000001.999");
  write_bytes((run / ".tmp-step-00000001.999" / "model.safetensors").string(), "partial");
  fs::create_directories(run / ".old-step-00000007.5");
  write_bytes((run / "latest.tmp.999.3").string(), "step-00000001\n");
  write_bytes((run / "metrics.jsonl.tmp.999.0").string(), "{");
  write_bytes((run / "notes.txt").string(), "mine");
  // Not a run yet: nothing names a checkpoint, so nothing loads.
  EXPECT_THROW(load_model(run.string()), Error);

  Model m(tiny_config());
  m.init_random(1);
  Trainer t(m, options(run.string(), 2));
  t.run();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".lock", "latest", "metrics.jsonl", "notes.txt",
                                             "step-00000001", "step-00000002"}));
  EXPECT_EQ(read_bytes((run / "notes.txt").string()), "mine");
}

TEST_F(CheckpointSafety, ASecondTrainerOnTheSameRunIsRefused) {
  const std::string run = dir.file("run");
  Model a(tiny_config()), b(tiny_config());
  a.init_random(1);
  b.init_random(1);
  Trainer ta(a, options(run, 2)), tb(b, options(run, 2));
  ta.prepare_run_dir();
  try {
    tb.run();
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another process is training into " + run), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(run + "/latest"));
}

// A resume from an older checkpoint moves the later ones aside and cuts the log; refused
// because another process trains into the run, it must do neither (it moved the running run's
// newest checkpoint away, leaving `latest` naming nothing, and dropped its log lines).
TEST_F(CheckpointSafety, ARefusedResumeLeavesTheRunningRunAlone) {
  const fs::path run = dir.file("run");
  {
    Model m(tiny_config());
    m.init_random(1);
    Trainer t(m, options(run.string(), 3));
    t.run();
  }
  const std::string metrics = read_bytes((run / "metrics.jsonl").string());
  Model a(tiny_config());
  a.init_random(1);
  Trainer running(a, options(run.string(), 5));
  running.prepare_run_dir();  // holds the lock, as a process training there does
  Model b(tiny_config());
  b.init_random(1);
  Trainer second(b, options(run.string(), 5));
  try {
    second.restore((run / "step-00000002").string());
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another process is training into " + run.string()),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::exists(run / "step-00000003"));
  EXPECT_TRUE(fs::exists(run / "step-00000002"));
  EXPECT_EQ(read_bytes((run / "metrics.jsonl").string()), metrics);
  for (const auto& e : fs::directory_iterator(run))
    EXPECT_EQ(e.path().filename().string().rfind("superseded", 0), std::string::npos) << e.path();
}

// A resume drops the log's lines after its checkpoint, and a torn last line a crash left. A line
// a user wrote into the log by hand (a note) was dropped with them, unsaid: now the resume stops,
// naming the line, and the log is left as it is.
TEST_F(CheckpointSafety, AResumeKeepsAHandWrittenLogLineAndDropsATornOne) {
  const fs::path run = dir.file("run");
  {
    Model m(tiny_config());
    m.init_random(1);
    Trainer t(m, options(run.string(), 3));
    t.run();
  }
  const std::string log = (run / "metrics.jsonl").string(), clean = read_bytes(log);
  const size_t first_end = clean.find('\n') + 1;
  const std::string edited =
      clean.substr(0, first_end) + "# lr looked high here\n" + clean.substr(first_end);
  write_bytes(log, edited);
  Model a(tiny_config());
  a.init_random(1);
  Trainer again(a, options(run.string(), 4));
  try {
    again.restore((run / "step-00000002").string());
    FAIL() << "a hand-written line was dropped";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl:2 is not JSON (written by hand?)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(read_bytes(log), edited);
  // A crash's torn last line goes, with the lines after the checkpoint.
  write_bytes(log, clean + "{\"step\": 4, \"lo");
  Model b(tiny_config());
  b.init_random(1);
  Trainer resumed(b, options(run.string(), 4));
  resumed.restore((run / "step-00000002").string());
  const std::string kept = read_bytes(log);
  EXPECT_EQ(kept.find("{\"step\": 4"), std::string::npos) << kept;
  EXPECT_EQ(kept.find("\"step\":3"), std::string::npos) << kept;
  EXPECT_NE(kept.find("\"step\":2"), std::string::npos) << kept;
}

// The data directory's tokenizer replaced mid-run (`prepare --overwrite` with another tokenizer;
// the run's shards stay mapped): every later checkpoint carried the new tokenizer beside weights
// of the old vocabulary (a user trial). A checkpoint carries the one the run started with.
TEST_F(CheckpointSafety, CheckpointsCarryTheTokenizerTheRunStartedWith) {
  const fs::path run = dir.file("run");
  bool swapped = false;
  run_with_hook(run, [&] {
    if (!swapped) {  // after step 1's checkpoint: another tokenizer where the data's was
      fs::remove(fs::path(data) / "chainlm_tokenizer.json");
      write_bytes((fs::path(data) / "tokenizer.model").string(), "not the run's tokenizer");
      swapped = true;
    }
  });
  ASSERT_TRUE(swapped);
  EXPECT_TRUE(fs::exists(run / "step-00000003" / "chainlm_tokenizer.json"));
  EXPECT_FALSE(fs::exists(run / "step-00000003" / "tokenizer.model"));
}

// The run directory emptied mid-run (`rm -rf RUN` while it trains): the log started again
// mid-way with nothing said, and report counted its steps from there (a user trial).
TEST_F(CheckpointSafety, ALogRemovedMidRunIsWarnedOf) {
  const fs::path run = dir.file("run");
  bool removed = false;
  ::testing::internal::CaptureStderr();
  run_with_hook(run, [&] {
    if (!removed) removed = fs::remove(run / "metrics.jsonl");
  });
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(removed);
  EXPECT_NE(err.find("metrics.jsonl was removed while this run wrote it"), std::string::npos)
      << err;
}

// The run directory renamed mid-run (`mv RUN RUN2` while it trains): a checkpoint failing then
// said a partial checkpoint "was removed" where none was, and the log's next line "no such
// file". Both name the run directory that is gone.
TEST_F(CheckpointSafety, ARunDirectoryMovedMidRunIsNamed) {
  const fs::path run = dir.file("run"), moved = dir.file("moved");
  const std::string gone = "the run directory " + run.string() + " no longer exists";
  std::string message;
  try {  // moved after step 1: its log line is the first write that fails
    run_with_hook(run, [&] {
      if (fs::exists(run)) fs::rename(run, moved);
    });
  } catch (const Error& e) {
    message = e.what();
  }
  ASSERT_TRUE(fs::exists(moved / "metrics.jsonl"));
  EXPECT_NE(message.find("cannot append to " + (run / "metrics.jsonl").string()), std::string::npos)
      << message;
  EXPECT_NE(message.find(gone), std::string::npos) << message;

  // Moved while a checkpoint is written into it.
  fs::remove_all(moved);
  RunDirectory rd(run.string());
  rd.prepare();
  message.clear();
  try {
    rd.write_checkpoint(1, 2, [&](const std::string& tmp) {
      fs::rename(run, moved);
      write_file_atomic(tmp + "/model.safetensors", "weights");  // as a checkpoint writes
    });
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("checkpoint at step 1 not written"), std::string::npos) << message;
  EXPECT_NE(message.find(gone), std::string::npos) << message;
  EXPECT_EQ(message.find("was removed"), std::string::npos) << message;
}

// Weights that start worse than uniform guessing on the data (a llama2.c model fine-tuned on data
// of another tokenizer of its size) trained on with no hint (a user trial): warned of.
TEST_F(CheckpointSafety, InitialWeightsWorseThanGuessingAreWarnedOf) {
  for (const float scale : {1.0f, 40.0f}) {
    Model m(tiny_config());
    m.init_random(1);
    ParamStore& ps = m.params();
    for (size_t i = 0; i < ps.size(); ++i) ps.values()[i] *= scale;  // confident and wrong
    TrainOptions o = options(dir.file(cat("run", scale)), 1);
    o.init = "weights";  // an --init run validates before its first step
    Trainer t(m, o);
    ::testing::internal::CaptureStderr();
    t.run();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.find("worse than guessing uniformly") != std::string::npos, scale > 1) << err;
  }
}

TEST_F(CheckpointSafety, UnnamedCheckpointIsReplacedAndLaterOnesPruned) {
  const fs::path run = dir.file("run");
  {
    Model m(tiny_config());
    m.init_random(1);
    Trainer t(m, options(run.string(), 4));
    t.run();
  }
  const std::string step4 = read_bytes((run / "step-00000004" / "model.safetensors").string());
  // As if killed after renaming step-4 into place but before `latest` named it, with a
  // directory of a later step lying around too.
  write_bytes((run / "latest").string(), "step-00000003\n");
  fs::copy(run / "step-00000004", run / "step-00000009");
  write_bytes((run / "step-00000004" / "model.safetensors").string(), "stale");

  Model m(tiny_config());
  m.init_random(2);
  Trainer t(m, options(run.string(), 4));
  t.restore(run.string());
  EXPECT_EQ(t.step(), 3);
  t.run();
  EXPECT_EQ(read_bytes((run / "latest").string()), "step-00000004\n");
  EXPECT_EQ(read_bytes((run / "step-00000004" / "model.safetensors").string()), step4);
  EXPECT_TRUE(fs::exists(run / "step-00000003"));
  EXPECT_FALSE(fs::exists(run / "step-00000009"));
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    if (name[0] == '.') {
      EXPECT_EQ(name, ".lock");
    }
  }
}

// An export written into a checkpoint directory, or the user's notes there: pruning the
// checkpoint deleted them with it, without a word. It is kept now, and said so once.
TEST_F(CheckpointSafety, AnOldCheckpointHoldingTheUsersFilesIsKept) {
  const fs::path run = dir.file("run");
  const std::string err = resume_keeping_one(
      run, 5, [&] { write_bytes((run / "step-00000001" / "NOTES.txt").string(), "mine"); });
  EXPECT_EQ(read_bytes((run / "step-00000001" / "NOTES.txt").string()), "mine");
  EXPECT_FALSE(fs::exists(run / "step-00000002"));  // the run's own go as before
  EXPECT_FALSE(fs::exists(run / "step-00000004"));
  EXPECT_TRUE(fs::exists(run / "step-00000005"));
  const std::string says = "kept the old checkpoint " + (run / "step-00000001").string();
  EXPECT_NE(err.find(says), std::string::npos) << err;
  EXPECT_EQ(err.find(says, err.find(says) + 1), std::string::npos) << "said once: " << err;
  EXPECT_NE(err.find("(NOTES.txt)"), std::string::npos) << err;
}

// A model written into the run under a checkpoint's name by another command (`expand --out
// run/step-10` in a run at step 300, a user trial) holds the run's file names but no trainer state:
// pruning deleted it without a word. It is kept now, and said so.
TEST_F(CheckpointSafety, AModelNamedLikeACheckpointThatNoRunWroteIsKept) {
  const fs::path run = dir.file("run");
  std::string weights;
  const std::string err = resume_keeping_one(run, 4, [&] {
    fs::copy(run / "step-00000001", run / "step-0", fs::copy_options::recursive);
    fs::remove(run / "step-0" / "trainer_state.json");
    fs::remove(run / "step-0" / "optimizer.safetensors");
    weights = read_bytes((run / "step-0" / "model.safetensors").string());
  });
  ASSERT_TRUE(fs::exists(run / "step-0" / "model.safetensors")) << err;
  EXPECT_EQ(read_bytes((run / "step-0" / "model.safetensors").string()), weights);
  EXPECT_FALSE(fs::exists(run / "step-00000001"));  // the run's own go as before
  EXPECT_NE(err.find("kept the old checkpoint " + (run / "step-0").string() +
                     ", which the run would prune (it keeps its newest checkpoints): it holds no "
                     "trainer_state.json"),
            std::string::npos)
      << err;
}

// A resume from an earlier checkpoint moves the later branch aside, log lines and all: the
// branch's own "resumed" event at that step stayed in the log, above the new one.
TEST_F(CheckpointSafety, ABranchMovedAsideTakesItsResumedEvent) {
  const fs::path run = dir.file("run");
  auto options_to = [&](long steps) {
    TrainOptions o = options(run.string(), steps);
    o.keep_checkpoints = 10;
    return o;
  };
  auto train_to = [&](long steps, bool resume) {
    Model m(tiny_config());
    m.init_random(1);
    Trainer t(m, options_to(steps));
    if (resume) t.restore(run.string());
    t.run();
  };
  train_to(4, false);
  train_to(6, true);  // resumed at 4
  write_bytes((run / "latest").string(), "step-00000004\n");
  train_to(6, true);  // the branch from 4 again
  auto resumed_at_4 = [](const std::string& dir) {
    int n = 0;
    for (const auto& j : test::read_metrics_lines(dir))
      n += j.value("event", "") == "resumed" && j["step"] == 4;
    return n;
  };
  EXPECT_EQ(resumed_at_4(run.string()), 1);
  std::string superseded;
  for (const auto& e : fs::directory_iterator(run))
    if (e.path().filename().string().rfind("superseded-", 0) == 0) superseded = e.path().string();
  ASSERT_FALSE(superseded.empty());
  EXPECT_EQ(resumed_at_4(superseded), 1);
}

// A run directory whose path is within a checkpoint's depth of PATH_MAX: the write probe passed,
// and the first checkpoint failed with "File name too long" after its steps.
TEST_F(CheckpointSafety, ARunPathTooLongForItsCheckpointsIsRefusedFirst) {
  std::string run = dir.file("");
  while (run.size() + 201 < 4040) run += std::string(200, 'd') + "/";
  run += std::string(4040 - run.size(), 'r');
  Model m(tiny_config());
  m.init_random(1);
  Trainer t(m, options(run, 2));
  try {
    t.run();
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("choose a shorter --out (nothing was trained)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(t.step(), 0);
}

TEST_F(CheckpointSafety, WriterRefusesNonFiniteWeights) {
  const fs::path run = dir.file("run");
  Model m(tiny_config());
  m.init_random(1);
  Trainer t(m, options(run.string(), 2));
  t.run();
  const std::string before = read_bytes((run / "step-00000002" / "model.safetensors").string());
  const ParamInfo& p = m.params().info(1);
  m.params().value(1)[3] = std::numeric_limits<float>::infinity();
  try {
    t.save();
    FAIL() << "expected chainlm::Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("refusing to write checkpoint"), std::string::npos) << what;
    EXPECT_NE(what.find("weight '" + p.name + "'[3] = inf is not finite"), std::string::npos) << what;
    EXPECT_NE(what.find("'latest' still names the previous one, step-00000002"), std::string::npos) << what;
  }
  EXPECT_EQ(read_bytes((run / "step-00000002" / "model.safetensors").string()), before);
  EXPECT_EQ(read_bytes((run / "latest").string()), "step-00000002\n");
}

}  // namespace
}  // namespace chainlm
