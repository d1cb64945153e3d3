#include "io/data_directory.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_document.h"
#include "io/atomic_file.h"

namespace chainlm {
namespace fs = std::filesystem;

namespace {

// A directory's meta.json, or null when it has none (a directory made by other means). One
// that does not parse as a JSON object is refused: ignored, it turned off the check for mixed
// shards and changed bits per byte without a word.
nlohmann::json read_meta(const fs::path& dir) {
  const fs::path path = dir / "meta.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return nullptr;
  nlohmann::json meta;
  std::string duplicate;
  try {
    meta = parse_json_noting_duplicates(read_file(path.string()), &duplicate);
  } catch (const std::exception&) {  // (nlohmann's, or the file's own read error)
  }
  CHAINLM_CHECK(
      meta.is_object() && duplicate.empty(), path.string(),
      " is not the JSON object prepare writes (cut short or edited?",
      duplicate.empty() ? std::string() : cat(" it gives '", duplicate, "' twice"),
      "): run prepare again with --overwrite, or remove it if you made the shards yourself");
  return meta;
}

// meta's count `key` of the shard named `shard` ("train.bin", "tokens" -> "train_tokens"), or
// nothing when it is missing (a prepare before the key was recorded).
std::optional<uint64_t> meta_count(const nlohmann::json& meta, const std::string& shard,
                                   const std::string& key) {
  const std::string name = shard.substr(0, shard.find('.')) + "_" + key;
  if (!meta.is_object() || !meta.contains(name)) return std::nullopt;
  // A count that is there but no count (edited by hand) is refused, not read as absent: that
  // turned the mixed-shards check off or changed bits per byte silently.
  CHAINLM_CHECK(meta[name].is_number_unsigned(), "meta.json: '", name, "' must be a count (got ",
                meta[name].dump().substr(0, 40), "): run prepare again with --overwrite");
  return meta[name].get<uint64_t>();
}

}  // namespace

bool prepare_interrupted(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / kPrepareMarker, ec);
}

std::string data_shard_path(const std::string& dir, const std::string& shard) {
  const std::string path = (fs::path(dir) / shard).string();
  CHAINLM_CHECK(
      !prepare_interrupted(dir), dir,
      ": a chainlm prepare writing this data directory did not finish, so its files may come from "
      "two corpora; run prepare again (with --overwrite)");
  // meta.json counts each shard's tokens; a shard whose header disagrees is another prepare's.
  const std::optional<uint64_t> expected = meta_count(read_meta(dir), shard, "tokens");
  if (!expected) return path;  // nothing to compare
  std::ifstream shard_in(path, std::ios::binary);
  char header[32] = {};
  if (!shard_in.read(header, sizeof header) || std::memcmp(header, "CLMTOKS1", 8) != 0)
    return path;  // TokenShard names what is wrong with the shard itself
  uint64_t count = 0;
  std::memcpy(&count, header + 24, 8);
  CHAINLM_CHECK(count == *expected, path, " holds ", count, " tokens but ",
                (fs::path(dir) / "meta.json").string(), " says ", *expected,
                ": the data directory mixes the files of two prepare runs; run prepare again "
                "(with --overwrite)");
  return path;
}

std::optional<RecordedShard> recorded_shard(const std::string& shard_path, uint64_t shard_tokens) {
  const fs::path path(shard_path);
  const std::string name = path.filename().string();
  if (name != "train.bin" && name != "val.bin") return std::nullopt;
  const nlohmann::json meta = read_meta(path.parent_path());
  const auto tokens = meta_count(meta, name, "tokens"),
             documents = meta_count(meta, name, "documents"),
             bytes = meta_count(meta, name, "bytes");
  if (!tokens || !documents || !bytes || *tokens != shard_tokens) return std::nullopt;
  return RecordedShard{*documents, *bytes};
}

}  // namespace chainlm
