#include "io/data_directory.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace chainlm {
namespace fs = std::filesystem;

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
  std::ifstream meta_in(fs::path(dir) / "meta.json");
  if (!meta_in) return path;  // a directory made by other means: nothing to compare
  nlohmann::json meta = nlohmann::json::parse(meta_in, nullptr, false);
  const std::string key = shard.substr(0, shard.find('.')) + "_tokens";  // train_tokens, val_tokens
  if (meta.is_discarded() || !meta.is_object() || !meta.contains(key) ||
      !meta[key].is_number_unsigned())
    return path;
  std::ifstream shard_in(path, std::ios::binary);
  char header[32] = {};
  if (!shard_in.read(header, sizeof header) || std::memcmp(header, "CLMTOKS1", 8) != 0)
    return path;  // TokenShard names what is wrong with the shard itself
  uint64_t count = 0;
  std::memcpy(&count, header + 24, 8);
  const uint64_t expected = meta[key].get<uint64_t>();
  CHAINLM_CHECK(count == expected, path, " holds ", count, " tokens but ",
                (fs::path(dir) / "meta.json").string(), " says ", expected,
                ": the data directory mixes the files of two prepare runs; run prepare again "
                "(with --overwrite)");
  return path;
}

std::optional<RecordedShard> recorded_shard(const std::string& shard_path, uint64_t shard_tokens) {
  const fs::path path(shard_path);
  const std::string name = path.filename().string();
  if (name != "train.bin" && name != "val.bin") return std::nullopt;
  std::ifstream meta_in(path.parent_path() / "meta.json");
  if (!meta_in) return std::nullopt;
  const nlohmann::json meta = nlohmann::json::parse(meta_in, nullptr, false);
  const std::string side = name.substr(0, name.find('.'));
  auto count = [&](const std::string& key) -> std::optional<uint64_t> {
    if (meta.is_discarded() || !meta.is_object() || !meta.contains(key) ||
        !meta[key].is_number_unsigned())
      return std::nullopt;
    return meta[key].get<uint64_t>();
  };
  const auto tokens = count(side + "_tokens"), documents = count(side + "_documents"),
             bytes = count(side + "_bytes");
  if (!tokens || !documents || !bytes || *tokens != shard_tokens) return std::nullopt;
  return RecordedShard{*documents, *bytes};
}

}  // namespace chainlm
