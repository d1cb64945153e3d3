#include "io/safetensors.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"

namespace chainlm {

// The format is little-endian and so is every machine we target; raw memcpy is then correct.
static_assert(std::endian::native == std::endian::little, "chainlm assumes a little-endian host");

namespace {

// A header this large means a corrupt length field, not a real model (HF caps it the same way).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kCrcKey = "chainlm.crc32";



// Byte size of every dtype the format defines; one we do not know means the file is corrupt
// or from a newer writer, and either way its offsets cannot be checked.
int dtype_size(const std::string& dtype) {
  static const std::map<std::string, int> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    float v = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -v : v;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

float bfloat16_to_float(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

uint64_t checked_numel_bytes(const std::string& where, const std::vector<int64_t>& shape,
                             int elem_size) {
  uint64_t n = static_cast<uint64_t>(elem_size);
  for (int64_t d : shape) {
    CHAINLM_CHECK(d >= 0, where, " has a negative dimension in shape ", shape_to_string(shape));
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      fail(where, " has an absurd shape ", shape_to_string(shape), " (size overflows)");
  }
  return n;
}

}  // namespace

uint32_t crc32_of(const void* data, size_t n) {
  const uLong crc = crc32_z(0L, Z_NULL, 0);
  if (n == 0) return static_cast<uint32_t>(crc);
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const unsigned char*>(data), n));
}

std::string crc32_hex(uint32_t crc) {
  char s[9];
  std::snprintf(s, sizeof s, "%08x", crc);
  return s;
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<RawTensor> raw;
  raw.reserve(tensors.size());
  for (const TensorView& t : tensors) raw.push_back({t.name, "F32", t.shape, t.data});
  write_safetensors(path, raw, metadata);
}

void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::map<std::string, std::string> meta = metadata;
  nlohmann::json crcs = nlohmann::json::object();
  std::set<std::string> names;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    const std::string where = cat(path, ": tensor '", t.name, "'");
    CHAINLM_CHECK(!t.name.empty(), path, ": a tensor has an empty name");
    CHAINLM_CHECK(t.name != kMetadataKey, path, ": '", kMetadataKey, "' is not a tensor name");
    CHAINLM_CHECK(names.insert(t.name).second, where, " appears twice");
    const int elem = dtype_size(t.dtype);
    CHAINLM_CHECK(elem > 0, where, " has unknown dtype '", t.dtype, "'");
    const uint64_t bytes = checked_numel_bytes(where, t.shape, elem);
    CHAINLM_CHECK(bytes == 0 || t.data != nullptr, where, " has no data");
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    crcs[t.name] = crc32_hex(bytes ? crc32_of(t.data, bytes) : crc32_of(nullptr, 0));
    sizes.push_back(bytes);
    offset += bytes;
  }
  meta[kCrcKey] = crcs.dump();
  header[kMetadataKey] = meta;
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_len = header_text.size();

  write_file_atomic(path, [&](std::FILE* f) {
    std::fwrite(&header_len, sizeof header_len, 1, f);
    std::fwrite(header_text.data(), 1, header_text.size(), f);
    for (size_t i = 0; i < tensors.size(); ++i)
      if (sizes[i]) std::fwrite(tensors[i].data, 1, sizes[i], f);
  });
}

SafetensorsReader::SafetensorsReader(const std::string& path)
    : path_(path), file_(path, "safetensors file") {
  const uint64_t file_size = file_.size();
  CHAINLM_CHECK(file_size >= 8, path, ": not a safetensors file: ", file_size,
                " bytes, shorter than the 8-byte header length");
  const unsigned char* bytes = file_.data();
  uint64_t header_len;
  std::memcpy(&header_len, bytes, 8);
  CHAINLM_CHECK(header_len <= kMaxHeaderBytes, path, ": header length ", header_len,
                " exceeds the 100 MB limit (corrupt file?)");
  CHAINLM_CHECK(header_len <= file_size - 8, path, ": header length ", header_len,
                " is larger than the file (", file_size,
                " bytes); truncated or not a safetensors file");
  data_start_ = 8 + header_len;
  const uint64_t data_size = file_size - data_start_;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  CHAINLM_CHECK(header.is_object(), path, ": header JSON is not an object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == kMetadataKey) {
      CHAINLM_CHECK(v.is_object(), path, ": '", kMetadataKey, "' is not an object");
      for (auto m_it = v.begin(); m_it != v.end(); ++m_it) {
        CHAINLM_CHECK(m_it.value().is_string(), path, ": metadata value '", m_it.key(),
                      "' is not a string");
        metadata_[m_it.key()] = m_it.value().get<std::string>();
      }
      continue;
    }
    const std::string where = cat(path, ": tensor '", name, "'");
    CHAINLM_CHECK(v.is_object(), where, " is not a JSON object");
    CHAINLM_CHECK(v.contains("dtype") && v["dtype"].is_string(), where, " has no string 'dtype'");
    CHAINLM_CHECK(v.contains("shape") && v["shape"].is_array(), where, " has no 'shape' array");
    CHAINLM_CHECK(
        v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
        where, " has no 'data_offsets' pair");
    Entry e;
    e.name = name;
    e.dtype = v["dtype"].get<std::string>();
    const int elem_size = dtype_size(e.dtype);
    CHAINLM_CHECK(elem_size > 0, where, " has unknown dtype '", e.dtype, "'");
    for (const auto& d : v["shape"]) {
      CHAINLM_CHECK(d.is_number_integer(), where, " has a non-integer dimension in its shape");
      CHAINLM_CHECK(d.get<int64_t>() >= 0, where, " has a negative dimension in its shape");
      e.shape.push_back(d.get<int64_t>());
    }
    for (const auto& o : v["data_offsets"])
      CHAINLM_CHECK(o.is_number_unsigned(), where, " has a non-integer or negative data offset");
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    CHAINLM_CHECK(e.begin <= e.end && e.end <= data_size, where, " has data_offsets [", e.begin,
                  ", ", e.end, "] outside the data section (", data_size, " bytes)");
    const uint64_t bytes = checked_numel_bytes(where, e.shape, elem_size);
    CHAINLM_CHECK(bytes == e.end - e.begin, where, " with dtype ", e.dtype, " and shape ",
                  shape_to_string(e.shape), " needs ", bytes, " bytes but data_offsets span ",
                  e.end - e.begin);
    entries_.push_back(std::move(e));
  }

  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    CHAINLM_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end, path, ": tensors '",
                  by_offset[i - 1]->name, "' and '", by_offset[i]->name, "' overlap");
  std::sort(entries_.begin(), entries_.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  if (auto it = metadata_.find(kCrcKey); it != metadata_.end()) {
    nlohmann::json crcs;
    try {
      crcs = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception&) {
      fail(path, ": metadata '", kCrcKey, "' is not valid JSON (corrupt header?)");
    }
    CHAINLM_CHECK(crcs.is_object(), path, ": metadata '", kCrcKey, "' is not a JSON object");
    for (auto c = crcs.begin(); c != crcs.end(); ++c) {
      const std::string hex = c.value().is_string() ? c.value().get<std::string>() : std::string();
      char* end = nullptr;
      const unsigned long v = hex.size() == 8 ? std::strtoul(hex.c_str(), &end, 16) : 0;
      CHAINLM_CHECK(hex.size() == 8 && end == hex.c_str() + 8, path, ": metadata '", kCrcKey,
                    "' has a bad checksum for tensor '", c.key(), "'");
      crc32_[c.key()] = static_cast<uint32_t>(v);
    }
  }
}

void SafetensorsReader::verify_checksum(const Entry& e) const {
  const auto it = crc32_.find(e.name);
  if (it == crc32_.end()) return;
  const uint32_t crc = crc32_of(file_.data() + data_start_ + e.begin, e.end - e.begin);
  CHAINLM_CHECK(crc == it->second, path_, ": tensor '", e.name, "' fails its checksum (CRC-32 ",
                crc32_hex(crc), ", recorded ", crc32_hex(it->second),
                "): the file is corrupt");
}

void SafetensorsReader::verify_checksums() const {
  for (const Entry& e : entries_) verify_checksum(e);
}

bool SafetensorsReader::has(const std::string& name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const Entry& e, const std::string& n) { return e.name < n; });
  return it != entries_.end() && it->name == name;
}

const SafetensorsReader::Entry& SafetensorsReader::entry(const std::string& name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const Entry& e, const std::string& n) { return e.name < n; });
  CHAINLM_CHECK(it != entries_.end() && it->name == name, path_, ": no tensor named '", name, "'");
  return *it;
}

void SafetensorsReader::convert(const Entry& e, float* dst) const {
  verify_checksum(e);
  const unsigned char* src = file_.data() + data_start_ + e.begin;
  const uint64_t n = static_cast<uint64_t>(shape_numel(e.shape));
  if (e.dtype == "F32") {
    if (n) std::memcpy(dst, src, n * sizeof(float));
  } else if (e.dtype == "F16" || e.dtype == "BF16") {
    const bool half = e.dtype == "F16";
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, src + 2 * i, 2);  // data need not be 2-byte aligned
      dst[i] = half ? half_to_float(v) : bfloat16_to_float(v);
    }
  } else {
    fail(path_, ": tensor '", e.name, "' has dtype ", e.dtype,
         "; only F32, F16 and BF16 can be read as float");
  }
}

const uint8_t* SafetensorsReader::read_raw(const std::string& name, const std::string& dtype,
                                           const std::vector<int64_t>& expected_shape) const {
  const Entry& e = entry(name);
  CHAINLM_CHECK(e.dtype == dtype, path_, ": tensor '", name, "' has dtype ", e.dtype, ", expected ",
                dtype);
  CHAINLM_CHECK(e.shape == expected_shape, path_, ": tensor '", name, "' has shape ",
                shape_to_string(e.shape), ", expected ", shape_to_string(expected_shape));
  verify_checksum(e);
  return file_.data() + data_start_ + e.begin;
}

void SafetensorsReader::read_f32(const std::string& name,
                                 const std::vector<int64_t>& expected_shape, float* dst) const {
  const Entry& e = entry(name);
  CHAINLM_CHECK(e.shape == expected_shape, path_, ": tensor '", name, "' has shape ",
                shape_to_string(e.shape), ", expected ", shape_to_string(expected_shape));
  convert(e, dst);
}

Tensor SafetensorsReader::read_f32(const std::string& name) const {
  const Entry& e = entry(name);
  Tensor t;
  t.shape = e.shape;
  // Check the dtype before allocating, so an unsupported tensor costs nothing.
  CHAINLM_CHECK(e.dtype == "F32" || e.dtype == "F16" || e.dtype == "BF16", path_, ": tensor '",
                name, "' has dtype ", e.dtype, "; only F32, F16 and BF16 can be read as float");
  t.data.resize(static_cast<size_t>(t.numel()));
  convert(e, t.data.data());
  return t;
}

}  // namespace chainlm
