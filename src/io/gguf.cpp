#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace chainlm {

static_assert(std::endian::native == std::endian::little, "chainlm assumes a little-endian host");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;  // GGML_MAX_DIMS

struct TypeSize {
  const char* name;
  uint32_t block, bytes;  // elements per block, bytes per block
};

// The ggml types whose sizes are fixed by their block layout (ggml.h, ggml-common.h). Types not
// listed are refused: without their size no offset can be checked.
const std::map<uint32_t, TypeSize>& type_sizes() {
  static const std::map<uint32_t, TypeSize> m = {
      {0, {"F32", 1, 4}},       {1, {"F16", 1, 2}},       {2, {"Q4_0", 32, 18}},
      {3, {"Q4_1", 32, 20}},    {6, {"Q5_0", 32, 22}},    {7, {"Q5_1", 32, 24}},
      {8, {"Q8_0", 32, 34}},    {9, {"Q8_1", 32, 36}},    {10, {"Q2_K", 256, 84}},
      {11, {"Q3_K", 256, 110}}, {12, {"Q4_K", 256, 144}}, {13, {"Q5_K", 256, 176}},
      {14, {"Q6_K", 256, 210}}, {15, {"Q8_K", 256, 292}}, {24, {"I8", 1, 1}},
      {25, {"I16", 1, 2}},      {26, {"I32", 1, 4}},      {27, {"I64", 1, 8}},
      {28, {"F64", 1, 8}},      {30, {"BF16", 1, 2}}};
  return m;
}

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    default: return 0;  // string, array: variable
  }
}

bool is_signed(GgufType t) {
  return t == GgufType::kInt8 || t == GgufType::kInt16 || t == GgufType::kInt32 || t == GgufType::kInt64;
}
bool is_float(GgufType t) { return t == GgufType::kFloat32 || t == GgufType::kFloat64; }

// Reads the file front to back; every read checks that the bytes are there.
class Cursor {
 public:
  Cursor(const std::string& path, const unsigned char* data, size_t size)
      : path_(path), data_(data), size_(size) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  // n raw bytes (an array of uint8).
  std::string bytes(uint64_t n, const char* what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail(path_, ": truncated GGUF: ", what, " needs ", n, " bytes at offset ", pos_, " but the file has ",
           left(), " left");
  }

 private:
  const std::string& path_;
  const unsigned char* data_;
  size_t size_, pos_ = 0;
};

GgufType checked_type(const std::string& path, uint32_t raw, const std::string& key) {
  CHAINLM_CHECK(raw <= 12, path, ": metadata '", key, "' has unknown value type ", raw, " (corrupt GGUF?)");
  return static_cast<GgufType>(raw);
}

void read_scalar(Cursor& c, GgufType t, int64_t& i, uint64_t& u, double& f) {
  switch (t) {
    case GgufType::kUint8: u = c.read<uint8_t>("a value"); break;
    case GgufType::kInt8: i = c.read<int8_t>("a value"); break;
    case GgufType::kUint16: u = c.read<uint16_t>("a value"); break;
    case GgufType::kInt16: i = c.read<int16_t>("a value"); break;
    case GgufType::kUint32: u = c.read<uint32_t>("a value"); break;
    case GgufType::kInt32: i = c.read<int32_t>("a value"); break;
    case GgufType::kFloat32: f = c.read<float>("a value"); break;
    case GgufType::kBool: u = c.read<uint8_t>("a value"); break;
    case GgufType::kUint64: u = c.read<uint64_t>("a value"); break;
    case GgufType::kInt64: i = c.read<int64_t>("a value"); break;
    case GgufType::kFloat64: f = c.read<double>("a value"); break;
    default: break;
  }
}

constexpr uint64_t kMaxGgufArrayElements = uint64_t(1) << 22, kMaxGgufArrayBytes = uint64_t(1)
                                                                                   << 28;

// `array_elements` counts the file's array elements so far.
GgufValue read_value(Cursor& c, GgufType type, const std::string& path, const std::string& key,
                     uint64_t& array_elements) {
  GgufValue v;
  v.type = type;
  if (type == GgufType::kString) {
    v.s = c.string("a string value");
  } else if (type == GgufType::kArray) {
    v.element_type = checked_type(path, c.read<uint32_t>("an array type"), key);
    CHAINLM_CHECK(v.element_type != GgufType::kArray, path, ": metadata '", key,
                  "' is an array of arrays, which no GGUF model uses (corrupt GGUF?)");
    const uint64_t n = c.read<uint64_t>("an array length");
    // Every element takes at least a byte (a string its 8-byte length): a count the rest of
    // the file cannot hold is corrupt, and must not size an allocation.
    const uint64_t least = v.element_type == GgufType::kString ? 8 : scalar_size(v.element_type);
    CHAINLM_CHECK(n <= c.left() / least, path, ": metadata '", key, "' claims ", n,
                  " elements, more than the file holds (truncated or corrupt GGUF)");
    // Bytes (an embedded file: chainlm's SentencePiece model, 4-5 MB for Gemma's) are held as
    // they are, one byte each, up to 256 MiB.
    if (v.element_type == GgufType::kUint8) {
      CHAINLM_CHECK(n <= kMaxGgufArrayBytes, path, ": metadata '", key, "' holds ", n,
                    " bytes; chainlm reads ", "byte arrays of up to ", kMaxGgufArrayBytes);
      v.bytes = c.bytes(n, "an array of bytes");
      return v;
    }
    // Other elements are held as 8 bytes or a string: 300 million of an unused key took 4.4 GB
    // to read (and `info` 98 s). The arrays models carry (tokens, scores, merges) hold a few
    // hundred thousand.
    CHAINLM_CHECK(n <= kMaxGgufArrayElements, path, ": metadata '", key, "' holds ", n,
                  " elements; chainlm reads arrays of up to ", kMaxGgufArrayElements,
                  " (a vocabulary's hold a few hundred thousand)");
    array_elements += n;
    CHAINLM_CHECK(array_elements <= 4 * kMaxGgufArrayElements, path,
                  ": the metadata's arrays hold more than ", 4 * kMaxGgufArrayElements,
                  " elements in all; a model's hold a few hundred thousand each");
    for (uint64_t e = 0; e < n; ++e) {
      if (v.element_type == GgufType::kString) {
        v.strings.push_back(c.string("an array string"));
        continue;
      }
      int64_t i = 0;
      uint64_t u = 0;
      double f = 0;
      read_scalar(c, v.element_type, i, u, f);
      if (is_float(v.element_type)) v.floats.push_back(f);
      else if (is_signed(v.element_type)) v.ints.push_back(i);
      else v.uints.push_back(u);
    }
  } else {
    read_scalar(c, type, v.i, v.u, v.f);
  }
  return v;
}

void put(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
template <class T>
void put(std::string& out, T v) { put(out, &v, sizeof v); }
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

const char* gguf_type_name(GgufType type) {
  static const char* names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                "bool",  "string", "array", "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(type);
  return i < 13 ? names[i] : "unknown";
}

std::string ggml_type_name(uint32_t type) {
  auto it = type_sizes().find(type);
  return it == type_sizes().end() ? "" : it->second.name;
}

uint64_t ggml_row_bytes(uint32_t type, uint64_t ne0) {
  auto it = type_sizes().find(type);
  if (it == type_sizes().end() || ne0 % it->second.block) return 0;
  return ne0 / it->second.block * it->second.bytes;
}

uint64_t GgufValue::element(uint64_t e) const {
  if (!uints.empty()) return uints[e];
  return bytes.empty() ? 0 : (uint8_t)bytes[e];
}

uint64_t GgufValue::size() const {
  if (type != GgufType::kArray) return 1;
  return strings.size() + ints.size() + uints.size() + floats.size() + bytes.size();
}

std::string GgufValue::describe() const {
  auto scalar = [](GgufType t, int64_t i, uint64_t u, double f) -> std::string {
    if (t == GgufType::kBool) return u ? "true" : "false";
    if (is_float(t)) return cat(f);
    if (is_signed(t)) return std::to_string(i);
    return std::to_string(u);
  };
  if (type == GgufType::kString) return cat('"', s.size() <= 60 ? s : s.substr(0, 57) + "...", '"');
  if (type != GgufType::kArray) return scalar(type, i, u, f);
  std::string out = cat("[", gguf_type_name(element_type), " x ", size(), "]");
  if (size() > 0) {
    out += " ";
    for (uint64_t e = 0; e < std::min<uint64_t>(size(), 3); ++e) {
      if (e) out += ", ";
      if (!strings.empty()) out += cat('"', strings[e].substr(0, 20), '"');
      else
        out += scalar(element_type, ints.empty() ? 0 : ints[e], element(e),
                      floats.empty() ? 0 : floats[e]);
    }
    if (size() > 3) out += ", ...";
  }
  return out;
}

GgufReader::GgufReader(const std::string& path) : path_(path), map_(path, "GGUF file") {
  Cursor c(path, map_.data(), map_.size());
  CHAINLM_CHECK(map_.size() >= 4 && c.read<uint32_t>("the magic") == kMagic, path,
                ": not a GGUF file (it does not start with \"GGUF\")");
  version_ = c.read<uint32_t>("the version");
  CHAINLM_CHECK(version_ == 2 || version_ == 3, path, ": GGUF version ", version_,
                " is not supported (versions 2 and 3 are; version 1 predates 64-bit counts)");
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // A key/value record takes at least 12 bytes and a tensor description at least 24.
  CHAINLM_CHECK(n_kv <= c.left() / 12 && n_tensors <= c.left() / 24, path, ": the header claims ", n_kv,
                " metadata entries and ", n_tensors, " tensors, more than the file holds (truncated or corrupt GGUF)");
  uint64_t array_elements = 0;
  const size_t metadata_start = c.pos();
  size_t metadata_crc_record = 0;  // where the key kGgufMetadataCrcKey begins, when there is one
  for (uint64_t k = 0; k < n_kv; ++k) {
    const size_t record = c.pos();
    std::string key = c.string("a metadata key");
    if (key == kGgufMetadataCrcKey) metadata_crc_record = record;
    CHAINLM_CHECK(!values_.count(key), path, ": metadata key '", key, "' appears twice (corrupt GGUF)");
    const GgufType type = checked_type(path, c.read<uint32_t>("a value type"), key);
    values_[key] = read_value(c, type, path, key, array_elements);
    keys_.push_back(std::move(key));
  }
  // chainlm's writer puts its record last: after another one, a tool rewrote the file and kept
  // chainlm's records while adding its own (llama.cpp's llama-quantize copies every key, then
  // moves general.file_type to the end, and its file was refused as corrupt). Such a file is the
  // other tool's: like any, it is read unchecked.
  const bool as_chainlm_wrote = metadata_crc_record && keys_.back() == kGgufMetadataCrcKey;
  if (as_chainlm_wrote) {  // the records before it, the tokenizer's among them
    const uint64_t want = get_uint(kGgufMetadataCrcKey);
    const uint32_t crc =
        crc32_of(map_.data() + metadata_start, metadata_crc_record - metadata_start);
    CHAINLM_CHECK(crc == want, path, ": the metadata fails its checksum (CRC-32 ", crc32_hex(crc),
                  ", recorded ", crc32_hex(static_cast<uint32_t>(want)),
                  "): the file is corrupt, or a tool edited its metadata "
                  "and left chainlm's record of it, '",
                  kGgufMetadataCrcKey, "', which it should drop");
  }
  if (has("general.alignment")) {
    alignment_ = get_uint("general.alignment");
    CHAINLM_CHECK(alignment_ > 0 && (alignment_ & (alignment_ - 1)) == 0 && alignment_ <= (1u << 20), path,
                  ": general.alignment ", alignment_, " is not a power of two (corrupt GGUF)");
  }
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensorInfo ti;
    ti.name = c.string("a tensor name");
    CHAINLM_CHECK(!tensor_index_.count(ti.name), path, ": tensor '", ti.name, "' appears twice (corrupt GGUF)");
    const uint32_t dims = c.read<uint32_t>("a tensor's dimension count");
    CHAINLM_CHECK(dims >= 1 && dims <= kMaxDims, path, ": tensor '", ti.name, "' has ", dims,
                  " dimensions (1 to 4 are possible; corrupt GGUF?)");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      const uint64_t n = c.read<uint64_t>("a tensor dimension");
      CHAINLM_CHECK(n >= 1 && !__builtin_mul_overflow(elements, n, &elements) && elements < (1ull << 50), path,
                    ": tensor '", ti.name, "' has an impossible dimension ", n, " (corrupt GGUF?)");
      ti.ne.push_back(n);
    }
    ti.type = c.read<uint32_t>("a tensor type");
    CHAINLM_CHECK(type_sizes().count(ti.type), path, ": tensor '", ti.name, "' has ggml type ", ti.type,
                  ", which chainlm does not know (a newer quantization type?)");
    const uint64_t row = ggml_row_bytes(ti.type, ti.ne[0]);
    CHAINLM_CHECK(row > 0, path, ": tensor '", ti.name, "' of type ", ggml_type_name(ti.type), " has rows of ",
                  ti.ne[0], " elements, not a whole number of its blocks (corrupt GGUF)");
    ti.bytes = row * (elements / ti.ne[0]);
    ti.offset = c.read<uint64_t>("a tensor offset");
    CHAINLM_CHECK(ti.offset % alignment_ == 0, path, ": tensor '", ti.name, "' starts at offset ", ti.offset,
                  ", not a multiple of the alignment ", alignment_, " (corrupt GGUF)");
    tensor_index_[ti.name] = tensors_.size();
    tensors_.push_back(std::move(ti));
  }
  data_start_ = align_up(c.pos(), alignment_);
  const uint64_t data_size = map_.size() > data_start_ ? map_.size() - data_start_ : 0;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const GgufTensorInfo& ti : tensors_) {
    CHAINLM_CHECK(ti.offset <= data_size && ti.bytes <= data_size - ti.offset, path, ": tensor '", ti.name,
                  "' (", ti.bytes, " bytes at data offset ", ti.offset, ") runs past the end of the file, whose ",
                  "data section has ", data_size, " bytes (truncated GGUF)");
    spans.emplace_back(ti.offset, ti.offset + ti.bytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    CHAINLM_CHECK(spans[i].first >= spans[i - 1].second, path, ": two tensors overlap in the data section (corrupt GGUF)");
  // The tensors' sums hold for a file whose metadata is as chainlm wrote it (its record just
  // checked): a tool that dropped that record alone (as docs/formats.md once asked) may have
  // changed the tensors too.
  if (as_chainlm_wrote && has(kGgufCrcKey)) {
    const GgufValue& v = value(kGgufCrcKey);
    CHAINLM_CHECK(v.type == GgufType::kArray && v.element_type == GgufType::kUint32 &&
                      v.uints.size() == tensors_.size(),
                  path, ": metadata '", kGgufCrcKey,
                  "' must be an array of one uint32 per tensor (", tensors_.size(), "), but it is ",
                  v.describe(), " (corrupt GGUF)");
    crc32_.assign(v.uints.begin(), v.uints.end());
  }
}

const uint8_t* GgufReader::data(const GgufTensorInfo& t) const {
  const uint8_t* bytes = map_.data() + data_start_ + t.offset;
  if (crc32_.empty()) return bytes;  // another tool's file: nothing recorded to check against
  const uint32_t want = crc32_[tensor_index_.at(t.name)];
  const uint32_t crc = crc32_of(bytes, t.bytes);
  CHAINLM_CHECK(crc == want, path_, ": tensor '", t.name, "' fails its checksum (CRC-32 ",
                crc32_hex(crc), ", recorded ", crc32_hex(want), "): the file is corrupt");
  return bytes;
}

const GgufValue& GgufReader::value(const std::string& key) const {
  auto it = values_.find(key);
  CHAINLM_CHECK(it != values_.end(), path_, ": GGUF metadata has no '", key, "'");
  return it->second;
}

std::string GgufReader::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  CHAINLM_CHECK(v.type == GgufType::kString, path_, ": metadata '", key, "' is a ", gguf_type_name(v.type),
                ", expected a string");
  return v.s;
}

uint64_t GgufReader::get_uint(const std::string& key) const {
  const GgufValue& v = value(key);
  CHAINLM_CHECK(scalar_size(v.type) > 0 && !is_float(v.type) && v.type != GgufType::kBool, path_,
                ": metadata '", key, "' is a ", gguf_type_name(v.type), ", expected an integer");
  if (!is_signed(v.type)) return v.u;
  CHAINLM_CHECK(v.i >= 0, path_, ": metadata '", key, "' is ", v.i, ", expected a non-negative integer");
  return static_cast<uint64_t>(v.i);
}

double GgufReader::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  CHAINLM_CHECK(is_float(v.type), path_, ": metadata '", key, "' is a ", gguf_type_name(v.type), ", expected a float");
  return v.f;
}

bool GgufReader::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  CHAINLM_CHECK(v.type == GgufType::kBool, path_, ": metadata '", key, "' is a ", gguf_type_name(v.type),
                ", expected a bool");
  return v.u != 0;
}

const GgufTensorInfo* GgufReader::find(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t GgufReader::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += t.bytes;
  return n;
}

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint32_t magic = 0;
  return in.read(reinterpret_cast<char*>(&magic), sizeof magic) && magic == kMagic;
}

void GgufWriter::key(const std::string& k, GgufType type) {
  CHAINLM_CHECK(std::find(keys_.begin(), keys_.end(), k) == keys_.end(), "GGUF writer: key '", k, "' set twice");
  keys_.push_back(k);
  ++n_kv_;
  put_string(header_, k);
  put<uint32_t>(header_, static_cast<uint32_t>(type));
}

void GgufWriter::add_string(const std::string& k, const std::string& v) {
  key(k, GgufType::kString);
  put_string(header_, v);
}
void GgufWriter::add_uint32(const std::string& k, uint32_t v) {
  key(k, GgufType::kUint32);
  put(header_, v);
}
void GgufWriter::add_int32(const std::string& k, int32_t v) {
  key(k, GgufType::kInt32);
  put(header_, v);
}
void GgufWriter::add_float32(const std::string& k, float v) {
  key(k, GgufType::kFloat32);
  put(header_, v);
}
void GgufWriter::add_bool(const std::string& k, bool v) {
  key(k, GgufType::kBool);
  put<uint8_t>(header_, v ? 1 : 0);
}
void GgufWriter::add_strings(const std::string& k, const std::vector<std::string>& v) {
  key(k, GgufType::kArray);
  put<uint32_t>(header_, static_cast<uint32_t>(GgufType::kString));
  put<uint64_t>(header_, v.size());
  for (const auto& s : v) put_string(header_, s);
}
void GgufWriter::add_float32s(const std::string& k, const std::vector<float>& v) {
  key(k, GgufType::kArray);
  put<uint32_t>(header_, static_cast<uint32_t>(GgufType::kFloat32));
  put<uint64_t>(header_, v.size());
  put(header_, v.data(), v.size() * sizeof(float));
}
void GgufWriter::add_int32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, GgufType::kArray);
  put<uint32_t>(header_, static_cast<uint32_t>(GgufType::kInt32));
  put<uint64_t>(header_, v.size());
  put(header_, v.data(), v.size() * sizeof(int32_t));
}
void GgufWriter::add_uint8s(const std::string& k, const std::string& bytes) {
  key(k, GgufType::kArray);
  put<uint32_t>(header_, static_cast<uint32_t>(GgufType::kUint8));
  put<uint64_t>(header_, bytes.size());
  header_ += bytes;
}

void GgufWriter::add_tensor(const std::string& name, uint32_t type, const std::vector<uint64_t>& ne,
                            std::vector<uint8_t> data) {
  CHAINLM_CHECK(!ne.empty() && ne.size() <= kMaxDims, "GGUF writer: tensor '", name, "' needs 1 to 4 dimensions");
  uint64_t bytes = ggml_row_bytes(type, ne[0]);
  CHAINLM_CHECK(bytes > 0, "GGUF writer: tensor '", name, "': rows of ", ne[0], " elements cannot be ",
                ggml_type_name(type));
  for (size_t d = 1; d < ne.size(); ++d) bytes *= ne[d];
  CHAINLM_CHECK(bytes == data.size(), "GGUF writer: tensor '", name, "' has ", data.size(), " bytes, its shape needs ",
                bytes);
  for (const auto& t : tensors_) CHAINLM_CHECK(t.name != name, "GGUF writer: tensor '", name, "' added twice");
  tensors_.push_back({name, type, ne, std::move(data)});
}

void GgufWriter::write(const std::string& path) const {
  std::string head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_ + 2);
  // Every tensor's CRC-32 (GgufReader::data checks them), then the CRC-32 of every metadata
  // record before its own (the reader checks it on opening): the last two entries.
  for (const char* own : {kGgufCrcKey, kGgufMetadataCrcKey})
    CHAINLM_CHECK(std::find(keys_.begin(), keys_.end(), own) == keys_.end(), "GGUF writer: key '",
                  own, "' is the writer's own");
  std::string metadata = header_;
  put_string(metadata, kGgufCrcKey);
  put<uint32_t>(metadata, static_cast<uint32_t>(GgufType::kArray));
  put<uint32_t>(metadata, static_cast<uint32_t>(GgufType::kUint32));
  put<uint64_t>(metadata, tensors_.size());
  for (const auto& t : tensors_) put<uint32_t>(metadata, crc32_of(t.data.data(), t.data.size()));
  const uint32_t metadata_crc = crc32_of(metadata.data(), metadata.size());
  put_string(metadata, kGgufMetadataCrcKey);
  put<uint32_t>(metadata, static_cast<uint32_t>(GgufType::kUint32));
  put<uint32_t>(metadata, metadata_crc);
  head += metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t n : t.ne) put<uint64_t>(head, n);
    put<uint32_t>(head, t.type);
    put<uint64_t>(head, offset);
    offset = align_up(offset + t.data.size(), kDefaultAlignment);
  }
  head.resize(align_up(head.size(), kDefaultAlignment), '\0');
  write_file_atomic(path, [&](std::FILE* f) {
    std::fwrite(head.data(), 1, head.size(), f);
    static const char zeros[kDefaultAlignment] = {};
    for (const auto& t : tensors_) {
      std::fwrite(t.data.data(), 1, t.data.size(), f);
      const uint64_t pad = align_up(t.data.size(), kDefaultAlignment) - t.data.size();
      std::fwrite(zeros, 1, pad, f);
    }
  });
}

}  // namespace chainlm
