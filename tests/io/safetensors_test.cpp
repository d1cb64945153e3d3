#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::count_entries;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

// A safetensors file assembled by hand: little-endian u64 header length, header, data.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string u16_bytes(std::initializer_list<uint16_t> values) {
  std::string s;
  for (uint16_t v : values) {
    s += static_cast<char>(v & 0xff);
    s += static_cast<char>(v >> 8);
  }
  return s;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(Safetensors, RoundTripIsBitExact) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  std::vector<float> a = {
      1.0f, -0.0f,       3.5e-42f /* subnormal */, std::numeric_limits<float>::infinity(),
      0.1f, -123456.789f};
  std::vector<float> b(3 * 4 * 5);
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::sin(static_cast<float>(i)) * 1e3f;
  float scalar = 42.0f;
  std::vector<TensorView> tensors = {{"layers.0.w", {2, 3}, a.data()},
                                     {"a.first", {3, 4, 5}, b.data()},
                                     {"scalar", {}, &scalar},
                                     {"empty", {0, 7}, nullptr}};
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "chainlm test"}});

  // The data section starts 8-byte aligned.
  const std::string bytes = read_bytes(path);
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_len + 4 * (6 + 60 + 1));

  SafetensorsReader reader(path);
  EXPECT_EQ(reader.entries().size(), 4u);
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  EXPECT_EQ(reader.metadata().at("note"), "chainlm test");
  EXPECT_TRUE(reader.has("scalar"));
  EXPECT_FALSE(reader.has("nope"));
  EXPECT_EQ(reader.entry("a.first").dtype, "F32");
  EXPECT_EQ(reader.entry("a.first").shape, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(reader.entry("a.first").end - reader.entry("a.first").begin, 240u);

  std::vector<float> got_a(6);
  reader.read_f32("layers.0.w", {2, 3}, got_a.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(bits(got_a[i]), bits(a[i])) << i;
  Tensor got_b = reader.read_f32("a.first");
  EXPECT_EQ(got_b.shape, (std::vector<int64_t>{3, 4, 5}));
  ASSERT_EQ(got_b.data.size(), b.size());
  EXPECT_EQ(std::memcmp(got_b.data.data(), b.data(), b.size() * 4), 0);
  EXPECT_EQ(reader.read_f32("scalar").data, std::vector<float>{42.0f});
  EXPECT_EQ(reader.read_f32("empty").numel(), 0);
}

TEST(Safetensors, ReadsF16AndBF16) {
  TempDir dir;
  const std::string path = dir.file("half.safetensors");
  // F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), -0, +inf.
  const std::string f16 = u16_bytes({0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x7C00});
  // BF16: 1, -5, 3.140625, 2^-126 (smallest normal).
  const std::string bf16 = u16_bytes({0x3F80, 0xC0A0, 0x4049, 0x0080});
  const std::string header = R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
                             R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[12,20]}})";
  write_bytes(path, raw_file(header, f16 + bf16));

  SafetensorsReader reader(path);
  EXPECT_TRUE(reader.metadata().empty());
  Tensor h = reader.read_f32("h");
  ASSERT_EQ(h.data.size(), 6u);
  EXPECT_EQ(h.data[0], 1.0f);
  EXPECT_EQ(h.data[1], -2.0f);
  EXPECT_EQ(h.data[2], 65504.0f);
  EXPECT_EQ(h.data[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(bits(h.data[4]), 0x80000000u);
  EXPECT_TRUE(std::isinf(h.data[5]) && h.data[5] > 0);

  std::vector<float> b(4);
  reader.read_f32("b", {4}, b.data());
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -5.0f);
  EXPECT_EQ(b[2], 3.140625f);
  EXPECT_EQ(b[3], std::ldexp(1.0f, -126));
}

class SafetensorsMalformed : public ::testing::Test {
 protected:
  // Expects opening a file with these bytes to throw chainlm::Error mentioning `needle`.
  void expect_open_error(const std::string& bytes, const std::string& needle) {
    write_bytes(path_, bytes);
    try {
      SafetensorsReader reader(path_);
      FAIL() << "expected chainlm::Error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path_), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
  TempDir dir_;
  std::string path_ = dir_.file("bad.safetensors");
};

TEST_F(SafetensorsMalformed, TooShort) {
  expect_open_error("abc", "shorter");
}
TEST_F(SafetensorsMalformed, Empty) {
  expect_open_error("", "shorter");
}

TEST_F(SafetensorsMalformed, HeaderLongerThanFile) {
  std::string bytes = raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  bytes.resize(20);  // truncated inside the header
  expect_open_error(bytes, "larger than the file");
}

TEST_F(SafetensorsMalformed, HugeHeaderLength) {
  std::string bytes(16, '\0');
  bytes[5] = 0x10;  // 2^44
  expect_open_error(bytes, "100 MB");
}

TEST_F(SafetensorsMalformed, InvalidJson) {
  expect_open_error(raw_file(R"({"a": {"dtype": "F32", )", ""), "not valid JSON");
}

TEST_F(SafetensorsMalformed, JsonNotObject) {
  expect_open_error(raw_file("[1, 2, 3]", ""), "not an object");
}

TEST_F(SafetensorsMalformed, MissingFields) {
  expect_open_error(raw_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), "dtype");
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "abcd"), "shape");
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", "abcd"), "data_offsets");
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd"),
                    "data_offsets");
  expect_open_error(raw_file(R"({"a":"F32"})", "abcd"), "not a JSON object");
}

TEST_F(SafetensorsMalformed, OffsetsOutsideData) {
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"),
                    "outside the data section");
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd"),
                    "outside the data section");
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd"),
                    "data offset");
}

TEST_F(SafetensorsMalformed, SizeDoesNotMatchShape) {
  expect_open_error(
      raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(16, '\0')),
      "needs 12 bytes");
  expect_open_error(raw_file(R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,12]}})",
                             std::string(16, '\0')),
                    "needs 6 bytes");
}

TEST_F(SafetensorsMalformed, NegativeAndAbsurdShapes) {
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,0]}})", ""),
                    "negative");
  expect_open_error(
      raw_file(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776,1099511627776],)"
               R"("data_offsets":[0,4]}})",
               "abcd"),
      "absurd");
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd"),
                    "non-integer");
}

// A header claiming 10^12 elements is refused from the header alone: the claimed byte range
// is checked against the file (4 bytes of data here) before any tensor is read or allocated,
// whether the offsets say 4 TB or are consistent with a 4-byte file.
TEST_F(SafetensorsMalformed, TrillionElementsAreRefusedBeforeAllocating) {
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[1000000,1000000],)"
                             R"("data_offsets":[0,4000000000000]}})",
                             "abcd"),
                    "has data_offsets [0, 4000000000000] outside the data section (4 bytes)");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[1000000,1000000],)"
                             R"("data_offsets":[0,4]}})",
                             "abcd"),
                    "shape [1000000, 1000000] needs 4000000000000 bytes but data_offsets span 4");
  // Offsets that wrap around 2^64 are not a small range.
  expect_open_error(raw_file(R"({"w":{"dtype":"U8","shape":[4],)"
                             R"("data_offsets":[18446744073709551615,3]}})",
                             "abcd"),
                    "outside the data section");
}

TEST_F(SafetensorsMalformed, Overlapping) {
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             std::string(12, '\0')),
                    "overlap");
}

TEST_F(SafetensorsMalformed, UnknownDtype) {
  expect_open_error(raw_file(R"({"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}})", "abcd"),
                    "unknown dtype");
}

TEST_F(SafetensorsMalformed, BadMetadata) {
  expect_open_error(raw_file(R"({"__metadata__":{"n":3}})", ""), "metadata");
}

TEST(Safetensors, UnsupportedDtypeAndWrongShapeOnRead) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_bytes(path, raw_file(R"({"i":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", "abcd"));
  SafetensorsReader reader(path);
  EXPECT_THROW(reader.read_f32("i"), Error);
  EXPECT_THROW(reader.entry("missing"), Error);

  std::vector<float> x(6, 1.0f);
  write_safetensors(path, {{"x", {2, 3}, x.data()}});
  SafetensorsReader reader2(path);
  std::vector<float> dst(6);
  try {
    reader2.read_f32("x", {3, 2}, dst.data());
    FAIL() << "expected a shape mismatch error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'x' has shape [2, 3], expected [3, 2]"), std::string::npos) << msg;
  }
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  float v = 1.0f;
  EXPECT_THROW(write_safetensors(dir.file("d.safetensors"), {{"a", {1}, &v}, {"a", {1}, &v}}),
               Error);
  EXPECT_THROW(write_safetensors(dir.file("m.safetensors"), {{"__metadata__", {1}, &v}}), Error);
  EXPECT_THROW(write_safetensors(dir.file("n.safetensors"), {{"neg", {-1}, &v}}), Error);
  EXPECT_EQ(count_entries(dir.path()), 0u);
}

TEST(Safetensors, UnwritablePathThrowsAndKeepsExistingFile) {
  TempDir dir;
  std::vector<float> big(100000, 2.0f);
  EXPECT_THROW(
      write_safetensors(dir.file("missing_dir/m.safetensors"), {{"w", {100000}, big.data()}}),
      Error);

  const std::string path = dir.file("model.safetensors");
  float one = 1.0f;
  write_safetensors(path, {{"w", {1}, &one}});
  const std::string before = read_bytes(path);
  {
    // Cap file sizes so the write fails halfway, as on a full disk.
    rlimit saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = saved;
    lim.rlim_cur = 4096;
    setrlimit(RLIMIT_FSIZE, &lim);
    EXPECT_THROW(write_safetensors(path, {{"w", {100000}, big.data()}}), Error);
    setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
  }
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(count_entries(dir.path()), 1u);
  SafetensorsReader reader(path);
  EXPECT_EQ(reader.read_f32("w").data, std::vector<float>{1.0f});
}

}  // namespace
}  // namespace chainlm
