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

}  // namespace chainlm
