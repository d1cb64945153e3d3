#pragma once
// A read-only memory map of a whole file, unmapped on destruction. Loaders of large files
// (safetensors, token shards) read through it instead of copying the file into memory.
#include <cstddef>
#include <string>

namespace chainlm {

class MappedFile {
 public:
  MappedFile() = default;
  // `what` names the kind of file in error messages ("cannot open token shard PATH: ...").
  MappedFile(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace chainlm
