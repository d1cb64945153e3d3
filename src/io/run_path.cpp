#include "io/run_path.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"

namespace chainlm {

namespace fs = std::filesystem;

long checkpoint_step(const std::string& name) {
  if (name.size() < 6 || name.size() > 20 || name.rfind("step-", 0) != 0) return -1;
  long step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::vector<std::pair<long, std::string>> run_checkpoints(const std::string& run) {
  std::vector<std::pair<long, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(run, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    const long step = checkpoint_step(name);
    std::error_code e;
    if (step >= 0 && it->is_directory(e)) found.emplace_back(step, std::move(name));
  }
  std::sort(found.begin(), found.end());
  return found;
}

bool is_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / "config.json", ec) &&
         fs::exists(fs::path(dir) / "model.safetensors", ec);
}

DirectoryKind directory_kind(const std::string& dir) {
  std::error_code ec;
  const fs::path d(dir);
  // A run killed before its first checkpoint has its log only; one whose `latest` was removed by
  // hand still has its checkpoints.
  if (fs::exists(d / "latest", ec) || fs::exists(d / "metrics.jsonl", ec) ||
      !run_checkpoints(dir).empty())
    return DirectoryKind::kRun;
  if (is_checkpoint_dir(dir)) return DirectoryKind::kCheckpoint;
  if (fs::exists(d / "train.bin", ec) && fs::exists(d / "val.bin", ec)) return DirectoryKind::kData;
  return DirectoryKind::kOther;
}

const char* directory_kind_name(DirectoryKind kind) {
  switch (kind) {
    case DirectoryKind::kRun:
      return "training run";
    case DirectoryKind::kCheckpoint:
      return "model checkpoint";
    case DirectoryKind::kData:
      return "data directory";
    default:
      return "directory";
  }
}

std::string other_entries_note(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || directory_kind(dir) == DirectoryKind::kRun) return "";
  std::vector<std::string> names;
  size_t count = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name == ".lock") continue;  // a run's marker
    ++count;
    if (names.size() < 3) names.push_back(name);
  }
  if (count == 0) return "";
  std::sort(names.begin(), names.end());
  std::string listed;
  for (const std::string& n : names) listed += cat(listed.empty() ? "'" : ", '", n, "'");
  return cat(dir, " already holds ", count, count == 1 ? " entry" : " entries", " (", listed,
             count > names.size() ? ", ..." : "",
             ") and is not a run: the run's checkpoints (step-*), 'latest' and metrics.jsonl go "
             "beside them");
}

namespace {

// What a file given where a checkpoint belongs is, when it is something chainlm writes or reads
// (a tokenizer passed as the model is a common slip).
std::string file_kind_note(const std::string& path) {
  std::error_code ec;
  const fs::path name = fs::path(path).filename();
  if (name == "model.safetensors" || name == "config.json" || name == "latest")
    return cat(": pass the directory that holds it, ", fs::path(path).parent_path().string());
  if (is_token_shard_file(path))
    return ": it is a chainlm token shard (training data), not a model";
  const auto size = fs::file_size(path, ec);
  if (ec || size > (64u << 20)) return "";  // tokenizers are small; a big file is not read whole
  try {
    load_tokenizer(path);
    return ": it is a tokenizer: pass it as --tokenizer, and the model as --model";
  } catch (const std::exception&) {
    return "";
  }
}

}  // namespace

std::string read_latest_name(const std::string& run) {
  std::string name = read_file((fs::path(run) / "latest").string());
  // Whitespace around the name, as an editor or `echo " step-4"` leaves it.
  while (!name.empty() && std::isspace((unsigned char)name.back())) name.pop_back();
  while (!name.empty() && std::isspace((unsigned char)name.front())) name.erase(0, 1);
  return name;
}

std::string resolve_checkpoint_dir(const std::string& path) {
  // error_code overloads throughout: a path the OS refuses (too long, say) is a chainlm::Error.
  std::error_code ec;
  CHAINLM_CHECK(fs::exists(path, ec), path, ": no such checkpoint or run directory");
  CHAINLM_CHECK(fs::is_directory(path, ec), path, ": not a directory (a chainlm checkpoint is a ",
                "directory with config.json and model.safetensors)", file_kind_note(path));
  if (fs::exists(fs::path(path) / "config.json", ec)) return path;
  const fs::path latest = fs::path(path) / "latest";
  if (!fs::exists(latest, ec)) {
    // A run stopped between writing a checkpoint and naming it in `latest` keeps its step-*
    // directories: name the newest, and what recovers the run.
    std::string newest;
    const auto checkpoints = run_checkpoints(path);
    for (auto it = checkpoints.rbegin(); it != checkpoints.rend() && newest.empty(); ++it)
      if (is_checkpoint_dir((fs::path(path) / it->second).string())) newest = it->second;
    // Token shards: what `chainlm prepare` writes, given where a model goes.
    const bool data = directory_kind(path) == DirectoryKind::kData;
    fail(path, ": neither a checkpoint (no config.json) nor a run directory (no 'latest' file)",
         data ? "; it is a data directory (chainlm prepare's token shards), not a model"
         : newest.empty()
             ? std::string()
             : cat("; it holds checkpoints, the newest ", (fs::path(path) / newest).string(),
                   ": pass that, or `chainlm train --out ", path,
                   " --resume` to go on with the run"));
  }
  // `ln -s step-N latest`, a habit from other tools: "cannot read latest: Is a directory" did
  // not say what `latest` is to be.
  CHAINLM_CHECK(!fs::is_directory(latest, ec), latest.string(),
                " is a directory (or a link to one); chainlm's `latest` is a file holding the "
                "checkpoint's name: ",
                "rm ", latest.string(), "; echo step-NNNNNNNN > ", latest.string());
  const std::string name = read_latest_name(path);
  // A corrupt `latest` must name a directory inside the run, never a path out of it.
  const bool plain_name = !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
                          name.find_first_of(std::string("/\0", 2)) == std::string::npos;
  CHAINLM_CHECK(plain_name, latest.string(), ": does not name a checkpoint directory of the run (",
                name.size() > 80 ? cat("'", name.substr(0, 80), "...', ", name.size(), " bytes")
                                 : cat("'", name, "'"),
                ")");
  const fs::path dir = fs::path(path) / name;
  CHAINLM_CHECK(fs::is_directory(dir, ec), latest.string(), ": names checkpoint '", name,
                "', which does not exist");
  return dir.string();
}

}  // namespace chainlm
