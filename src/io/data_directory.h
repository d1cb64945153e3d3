#pragma once
// A data directory (`chainlm prepare`'s output): train.bin, val.bin, the tokenizer and meta.json.
// prepare replaces them one file at a time, so a prepare stopped part-way over an earlier one
// (Ctrl-C, a kill, a crash) could leave one corpus's train.bin beside another's val.bin and
// tokenizer. It marks the directory while it writes and checks nothing is mixed when reading.
#include <cstdint>
#include <optional>
#include <string>

namespace chainlm {

// The file prepare keeps in a data directory from its first write to its last.
inline constexpr const char* kPrepareMarker = ".prepare-incomplete";

// The path of `shard` ("train.bin", "val.bin") in data directory `dir`, once the directory is
// known whole: throws when prepare's marker is there (a prepare that did not finish), or when
// meta.json's token count for the shard differs from the shard's own (files of two prepares).
std::string data_shard_path(const std::string& dir, const std::string& shard);

// What meta.json records of the shard at `shard_path` ("DIR/train.bin" or "DIR/val.bin"): its
// documents and their bytes as read (eval ppl's bits per byte). Nothing when the shard is not
// in such a directory, meta.json predates the record, or its token count is not the shard's.
struct RecordedShard {
  uint64_t documents = 0, bytes = 0;
};
std::optional<RecordedShard> recorded_shard(const std::string& shard_path, uint64_t shard_tokens);

// Whether `dir` holds prepare's marker.
bool prepare_interrupted(const std::string& dir);

}  // namespace chainlm
