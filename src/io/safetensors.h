#pragma once
// The Hugging Face safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}),
// then the raw tensor data; offsets are relative to the start of the data.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"

namespace chainlm {

// Writes `tensors` as F32 (row-major, in the given order) atomically. Names must be unique
// and not "__metadata__". The header is space-padded so the data starts 8-byte aligned. The
// metadata gets "chainlm.crc32": a JSON object of every tensor's CRC-32 (8 hex digits), which
// readers check (other tools ignore metadata).
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A tensor given as raw bytes of any safetensors dtype (U8 for block-quantized weights).
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // shape's element count times the dtype's size, in bytes
};
// write_safetensors for raw tensors (F32 TensorViews are one case of it), in the given order.
void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// CRC-32 (zlib's, as in gzip and PNG) of n bytes, and as 8 lower-case hex digits: the checksum
// of the tensors written below and the fingerprint of a tokenizer file (io/tokenizer.h).
uint32_t crc32_of(const void* data, size_t n);
std::string crc32_hex(uint32_t crc);

// Memory-maps a safetensors file and validates its whole header on construction, so a
// malformed file fails with a clear chainlm::Error before any tensor is touched.
class SafetensorsReader {
 public:
  struct Entry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;  // byte range within the data section
  };

  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<Entry>& entries() const { return entries_; }  // sorted by name
  bool has(const std::string& name) const;
  const Entry& entry(const std::string& name) const;  // throws naming the file and tensor
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Converts F32, F16 or BF16 data to float into dst (numel floats). Throws when the stored
  // shape differs from expected_shape or the dtype is not one of those three, or when the file
  // records the tensor's CRC-32 and its bytes do not match it (a corrupt file).
  void read_f32(const std::string& name, const std::vector<int64_t>& expected_shape,
                float* dst) const;
  Tensor read_f32(const std::string& name) const;
  // The stored bytes of a tensor of the given dtype and shape, checksum verified; they live as
  // long as the reader (the file is memory-mapped).
  const uint8_t* read_raw(const std::string& name, const std::string& dtype,
                          const std::vector<int64_t>& expected_shape) const;
  // Checks every tensor against its recorded CRC-32 (those without one pass); throws naming the
  // first that fails.
  void verify_checksums() const;
  bool has_checksums() const { return !crc32_.empty(); }

 private:
  void convert(const Entry& e, float* dst) const;
  void verify_checksum(const Entry& e) const;

  std::string path_;
  MappedFile file_;
  uint64_t data_start_ = 0;  // file offset of the data section
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, uint32_t> crc32_;  // from metadata "chainlm.crc32"
};

}  // namespace chainlm
