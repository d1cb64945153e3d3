#pragma once
// The GGUF file format (llama.cpp's, docs/formats.md "GGUF"), versions 2 and 3: the magic
// "GGUF", a version, the tensor and metadata counts, key/value metadata (typed scalars, strings
// and arrays of them), tensor descriptions (name, dimensions innermost first, ggml type, offset),
// then the tensor data, each tensor aligned to general.alignment (32 unless set). This file knows
// the container only; the LLaMA model and tokenizer inside are src/model/gguf_convert.h.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace chainlm {

// Metadata value types, as the format numbers them.
enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
const char* gguf_type_name(GgufType type);

// ggml tensor types chainlm writes (others are read as far as their sizes, for `info`).
enum GgmlType : uint32_t { kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ8_0 = 8 };
// "F32", "Q4_K", ...; "" for a number ggml does not define.
std::string ggml_type_name(uint32_t type);
// Bytes of a row of ne0 elements of the type; 0 when the type is unknown or ne0 is not a whole
// number of its blocks.
uint64_t ggml_row_bytes(uint32_t type, uint64_t ne0);

// One metadata value. Scalars are held widened (integers in i or u by signedness, floats in f,
// bools in u); arrays keep their element type and their elements the same way.
struct GgufValue {
  GgufType type = GgufType::kUint32;
  GgufType element_type = GgufType::kUint32;  // arrays only
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;      // arrays of signed integers
  std::vector<uint64_t> uints;    // arrays of unsigned integers and bools
  std::vector<double> floats;     // arrays of floats
  std::vector<std::string> strings;
  std::string bytes;              // arrays of uint8, as they are
  uint64_t size() const;          // element count of an array (1 for a scalar)
  uint64_t element(uint64_t e) const;  // element e of an array of unsigned integers, bools or bytes
  std::string describe() const;   // the value as `info` prints it (long arrays abbreviated)
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ne[0] is the innermost (row) length: a (rows, cols) matrix is {cols, rows}
  uint32_t type = kGgmlF32;
  uint64_t offset = 0;       // within the data section
  uint64_t bytes = 0;
};

// Memory-maps a GGUF file and validates all of it on construction (magic, version, every
// length, type, dimension, offset and the alignment), so a truncated or corrupt file fails with a
// chainlm::Error naming what is wrong before anything reads a tensor.
class GgufReader {
 public:
  explicit GgufReader(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Keys in file order.
  const std::vector<std::string>& keys() const { return keys_; }
  bool has(const std::string& key) const { return values_.count(key) > 0; }
  const GgufValue& value(const std::string& key) const;  // throws naming the file and key
  // Typed access: throws naming the key when it is missing or of another type (any integer type
  // whose value fits is accepted for the integer getters).
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(const std::string& name) const;  // null when absent
  // A tensor's bytes. In a file chainlm wrote (metadata kCrcKey) they are checked against the
  // CRC-32 recorded for the tensor first, failing with an error naming the file and tensor: a
  // flipped byte in a download or copy loaded as weights nobody trained, nothing said.
  const uint8_t* data(const GgufTensorInfo& t) const;
  bool has_checksums() const { return !crc32_.empty(); }
  uint64_t tensor_bytes() const;  // the data section's tensors together

 private:
  std::string path_;
  MappedFile map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32, data_start_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> values_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  std::vector<uint32_t> crc32_;  // per tensor, in file order; empty when the file records none
};

// The metadata key under which GgufWriter records every tensor's CRC-32 (zlib's), an array of
// uint32 in the file's tensor order. Other readers (llama.cpp) list it among the metadata and
// ignore it.
inline constexpr const char* kGgufCrcKey = "chainlm.tensor_crc32";
// The key under which it records the CRC-32 of the metadata records before this one (the
// tokenizer's vocabulary and every setting among them), a uint32, checked when a file is opened.
inline constexpr const char* kGgufMetadataCrcKey = "chainlm.metadata_crc32";

// True when the file starts with the GGUF magic. Never throws.
bool is_gguf_file(const std::string& path);

// Builds a GGUF (version 3, alignment 32) in memory order and writes it atomically.
class GgufWriter {
 public:
  void add_string(const std::string& key, const std::string& v);
  void add_uint32(const std::string& key, uint32_t v);
  void add_int32(const std::string& key, int32_t v);
  void add_float32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_float32s(const std::string& key, const std::vector<float>& v);
  void add_int32s(const std::string& key, const std::vector<int32_t>& v);
  void add_uint8s(const std::string& key, const std::string& bytes);
  // `data` holds ggml_row_bytes(type, ne[0]) times the other dimensions' product bytes.
  void add_tensor(const std::string& name, uint32_t type, const std::vector<uint64_t>& ne,
                  std::vector<uint8_t> data);
  void write(const std::string& path) const;

 private:
  void key(const std::string& k, GgufType type);
  std::string header_;  // the metadata key/value records, already encoded
  uint64_t n_kv_ = 0;
  std::vector<std::string> keys_;
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> ne;
    std::vector<uint8_t> data;
  };
  std::vector<Tensor> tensors_;
};

}  // namespace chainlm
