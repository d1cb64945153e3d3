#include "io/data_directory.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/test_temp_dir.h"
#include "io/token_shard.h"

namespace chainlm {
namespace {

using testing::TempDir;
using testing::write_bytes;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A prepare stopped between its first replaced shard and meta.json leaves its mark; shards
// whose counts disagree with meta.json are two prepares' files. Both are refused by name.
TEST(DataDirectory, AnUnfinishedOrMixedDirectoryIsRefused) {
  TempDir dir;
  write_token_shard(dir.file("train.bin"), {1, 2, 3, 4}, 300);
  write_token_shard(dir.file("val.bin"), {5, 6}, 300);
  EXPECT_EQ(data_shard_path(dir.path().string(), "train.bin"),
            dir.file("train.bin"));  // no meta.json: nothing to compare
  write_bytes(dir.file("meta.json"), R"({"train_tokens": 4, "val_tokens": 2})");
  EXPECT_EQ(data_shard_path(dir.path().string(), "val.bin"), dir.file("val.bin"));
  write_token_shard(dir.file("val.bin"), {5, 6, 7}, 300);  // another prepare's val.bin
  EXPECT_EQ(data_shard_path(dir.path().string(), "train.bin"), dir.file("train.bin"));
  const std::string mixed = error_of([&] { data_shard_path(dir.path().string(), "val.bin"); });
  EXPECT_NE(mixed.find("holds 3 tokens but"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find("says 2"), std::string::npos) << mixed;
  // A count that is no count is refused, not read as absent.
  write_bytes(dir.file("meta.json"), R"({"train_tokens": 4, "val_tokens": "lots"})");
  const std::string bad = error_of([&] { data_shard_path(dir.path().string(), "val.bin"); });
  EXPECT_NE(bad.find("'val_tokens' must be a count (got \"lots\")"), std::string::npos) << bad;
  write_bytes(dir.file("meta.json"), R"({"train_tokens": 4, "val_tokens": 2, "train_tokens": 5})");
  const std::string twice = error_of([&] { data_shard_path(dir.path().string(), "val.bin"); });
  EXPECT_NE(twice.find("it gives 'train_tokens' twice"), std::string::npos) << twice;
  // A meta.json cut short is refused (it was read as none: no check, other bits per byte).
  write_bytes(dir.file("meta.json"), R"({"train_tokens": 4, "val_tok)");
  const std::string torn = error_of([&] { data_shard_path(dir.path().string(), "val.bin"); });
  EXPECT_NE(torn.find("meta.json is not the JSON object prepare writes"), std::string::npos)
      << torn;
  write_bytes(dir.file(kPrepareMarker), "");
  EXPECT_TRUE(prepare_interrupted(dir.path().string()));
  const std::string unfinished =
      error_of([&] { data_shard_path(dir.path().string(), "train.bin"); });
  EXPECT_NE(unfinished.find("did not finish"), std::string::npos) << unfinished;
}

pid_t finished_process() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

// What Ctrl-C or a kill left beside an output (a 60 MB train.bin.tmp.PID.N, an export's
// .tmp-NAME-PID directory) goes at the next write; a live writer's temporary file stays.
TEST(AtomicFile, StaleTemporariesOfDeadWritersAreRemoved) {
  TempDir dir;
  const std::string dead = std::to_string(finished_process()), alive = std::to_string(::getpid());
  write_bytes(dir.file("train.bin.tmp." + dead + ".0"), "stale");
  write_bytes(dir.file("train.bin.tmp." + alive + ".7"), "a live writer's");
  write_bytes(dir.file("val.bin.tmp." + dead + ".0"), "another file's");
  write_bytes(dir.file("train.bin.tmp.notapid"), "not a temporary");
  std::filesystem::create_directories(dir.file(".tmp-out-" + dead + "/sub"));
  std::filesystem::create_directories(
      dir.file(".tmp-out-" + dead + "-" + alive));  // ".tmp-out-N-"'s, live
  write_token_shard(dir.file("train.bin"), {1}, 10);
  EXPECT_FALSE(std::filesystem::exists(dir.file("train.bin.tmp." + dead + ".0")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("train.bin.tmp." + alive + ".7")));
  EXPECT_TRUE(
      std::filesystem::exists(dir.file("val.bin.tmp." + dead + ".0")));  // not this output's
  EXPECT_TRUE(std::filesystem::exists(dir.file("train.bin.tmp.notapid")));
  // export's GGUF file: out.gguf.tmp-PID, written through its own out.gguf.tmp-PID.tmp.PID.N.
  write_bytes(dir.file("m.gguf.tmp-" + dead + ".tmp." + dead + ".0"), "a killed export's");
  write_bytes(dir.file("m.gguf.tmp-" + alive + ".tmp." + alive + ".0"), "a live export's");
  remove_stale_temporaries(dir.path().string(), "m.gguf.tmp-");
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.gguf.tmp-" + dead + ".tmp." + dead + ".0")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("m.gguf.tmp-" + alive + ".tmp." + alive + ".0")));
  remove_stale_temporaries(dir.path().string(), ".tmp-out-");
  EXPECT_FALSE(std::filesystem::exists(dir.file(".tmp-out-" + dead)));
  EXPECT_TRUE(std::filesystem::exists(dir.file(".tmp-out-" + dead + "-" + alive)));
}

// Two writers racing for one new name: the second is told, and the first's file stays.
TEST(AtomicFile, RenameNoReplaceNeverReplaces) {
  TempDir dir;
  write_bytes(dir.file("a"), "first");
  rename_no_replace(dir.file("a"), dir.file("out"), "test");
  EXPECT_EQ(testing::read_bytes(dir.file("out")), "first");
  write_bytes(dir.file("b"), "second");
  const std::string e =
      error_of([&] { rename_no_replace(dir.file("b"), dir.file("out"), "export"); });
  EXPECT_NE(e.find("appeared while export was writing it; nothing was overwritten"),
            std::string::npos)
      << e;
  EXPECT_EQ(testing::read_bytes(dir.file("out")), "first");
  EXPECT_EQ(testing::read_bytes(dir.file("b")), "second");
  std::filesystem::create_directories(dir.file("d1/x"));
  std::filesystem::create_directories(dir.file("d2"));
  EXPECT_NE(error_of([&] { rename_no_replace(dir.file("d1"), dir.file("d2"), "quantize"); }), "");
  EXPECT_TRUE(std::filesystem::exists(dir.file("d1/x")));
}

}  // namespace
}  // namespace chainlm
