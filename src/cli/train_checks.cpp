#include "cli/train_checks.h"

#include <filesystem>

#include "core/error.h"
#include "io/data_directory.h"
#include "io/run_path.h"
#include "io/tokenizer.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

// --out naming a checkpoint (step-N/, or any directory with config.json and model.safetensors)
// instead of a run: training would write the run's checkpoints inside it, where pruning later
// deletes them. Refused; a resume is pointed at the run when the checkpoint sits in one.
void refuse_checkpoint_as_run(const std::string& out, bool resume) {
  fs::path p = fs::path(out).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  const std::string advice =
      !resume ? std::string("; choose another --out (nothing was overwritten)")
      : fs::exists(parent / "latest", ec)
          ? cat("; to resume its run: chainlm train --out ", parent.string(), " --resume")
          : cat("; to train on from its weights, start a new run: chainlm train --init ", out,
                " --out NEW ... (nothing was trained)");
  fail(resume ? "train --resume: " : "train: ", out,
       " is a checkpoint, not a run directory: --out ",
       "names the run (the directory holding step-* checkpoints and 'latest')", advice);
}

// Every checkpoint carries the tokenizer of its data (trainer_checkpoint.cpp), so data without
// one would fail at the first checkpoint, after the steps before it were spent: refused before
// the first step. A data directory that does not exist is left to the trainer to name.
void require_data_tokenizer(const std::string& data_dir) {
  std::error_code ec;
  // A text file as --data ("cannot open token shard corpus.txt/train.bin: Not a directory").
  CHAINLM_CHECK(
      !fs::exists(data_dir, ec) || fs::is_directory(data_dir, ec), "train: --data ", data_dir,
      " is a file; --data takes the directory chainlm prepare makes of text (chainlm prepare "
      "--input ",
      data_dir, " --out DATA_DIR) (nothing was trained)");
  if (!fs::is_directory(data_dir, ec)) return;
  // A run or a checkpoint given as --data, or a directory with no shards (empty, or a first
  // prepare killed before its rename): "holds no tokenizer ... copy it" was the wrong advice.
  const DirectoryKind kind = directory_kind(data_dir);
  CHAINLM_CHECK(kind != DirectoryKind::kRun && kind != DirectoryKind::kCheckpoint, "train: --data ",
                data_dir, " is a ", directory_kind_name(kind),
                ", not a data directory (chainlm prepare writes one: token shards train.bin and "
                "val.bin) (nothing was trained)");
  // Before what a killed prepare left looks like (its tokenizer removed, not yet replaced):
  // "holds no tokenizer ... copy it in" sent the user to mend mixed shards by hand.
  CHAINLM_CHECK(
      !prepare_interrupted(data_dir), "train: --data ", data_dir,
      ": a chainlm prepare writing this data directory did not finish, so its files may "
      "come from two corpora; run prepare again (with --overwrite) (nothing was trained)");
  CHAINLM_CHECK(fs::exists(fs::path(data_dir) / "train.bin", ec), "train: --data ", data_dir,
                " holds no train.bin: it is not a data directory chainlm prepare finished "
                "(chainlm prepare --out ",
                data_dir, " writes one) (nothing was trained)");
  if (dir_has_tokenizer(data_dir)) {
    // Read now, not at the first checkpoint (a truncated tokenizer.model stopped the run there,
    // with every step before it spent).
    try {
      load_tokenizer(data_dir);
    } catch (const Error& e) {
      fail("train: the tokenizer of the data directory cannot be read: ", e.what(),
           "; every checkpoint carries it, so the run would fail at its first one. Copy the "
           "tokenizer the shards were made with into ",
           data_dir, " (nothing was trained)");
    }
    return;
  }
  fail(
      "train: the data directory ", data_dir, " holds no tokenizer (tokenizer.model, ",
      "tokenizer.json or chainlm_tokenizer.json, which chainlm prepare writes beside the shards); ",
      "every checkpoint carries the data's tokenizer, so the run would fail at its first one. "
      "Copy ",
      "the tokenizer the shards were made with into ", data_dir, " (nothing was trained)");
}

}  // namespace chainlm::cli
