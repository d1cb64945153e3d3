// The GGUF container (io/gguf.h): the bytes the writer lays down, checked against the format as
// the GGUF spec defines it (built here by hand, not by the writer), reading every value type
// back, and clear errors for truncated and corrupt files.
#include "io/gguf.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::TempDir;

template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_str(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string error_of(const std::string& path) {
  try {
    GgufReader r(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The file of the spec's layout: header, two key/values, one 2x3 F32 tensor at offset 0 after
// padding to 32 bytes, and its data. `with_crc`: a third key/value, the array of one uint32
// chainlm's writer adds (the tensor's CRC-32, taken here with zlib itself), `crcs` times.
// trailing_key: a key after chainlm's records, as llama-quantize leaves them (it copies every
// key, then moves general.file_type to the end).
std::string hand_made_gguf(bool with_crc = false, int crcs = 1, bool trailing_key = false) {
  std::string s;
  put<uint32_t>(s, 0x46554747);  // "GGUF"
  put<uint32_t>(s, 3);
  put<uint64_t>(s, 1);  // tensors
  put<uint64_t>(s, (with_crc ? 4 : 2) + trailing_key);  // key/values
  put_str(s, "general.architecture");
  put<uint32_t>(s, 8);  // string
  put_str(s, "llama");
  put_str(s, "llama.block_count");
  put<uint32_t>(s, 4);  // uint32
  put<uint32_t>(s, 5);
  if (with_crc) {
    float values[6];
    for (int i = 0; i < 6; ++i) values[i] = 0.5f * i;
    put_str(s, "chainlm.tensor_crc32");
    put<uint32_t>(s, 9);  // array
    put<uint32_t>(s, 4);  // of uint32
    put<uint64_t>(s, crcs);
    for (int c = 0; c < crcs; ++c)
      put<uint32_t>(s, static_cast<uint32_t>(
                           ::crc32(0L, reinterpret_cast<const Bytef*>(values), sizeof values)));
    // The records so far, from the first key (after the 24 bytes of magic, version and counts).
    const uLong metadata_crc =
        ::crc32(0L, reinterpret_cast<const Bytef*>(s.data() + 24), s.size() - 24);
    put_str(s, "chainlm.metadata_crc32");
    put<uint32_t>(s, 4);  // uint32
    put<uint32_t>(s, static_cast<uint32_t>(metadata_crc));
  }
  if (trailing_key) {
    put_str(s, "general.file_type");
    put<uint32_t>(s, 4);  // uint32
    put<uint32_t>(s, 0);
  }
  put_str(s, "w");
  put<uint32_t>(s, 2);
  put<uint64_t>(s, 3);  // ne0: the row length
  put<uint64_t>(s, 2);
  put<uint32_t>(s, 0);  // F32
  put<uint64_t>(s, 0);
  s.resize((s.size() + 31) / 32 * 32, '\0');
  for (int i = 0; i < 6; ++i) put<float>(s, 0.5f * i);
  return s;
}

TEST(Gguf, WriterLaysDownTheSpecsBytes) {
  TempDir dir;
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.block_count", 5);
  std::vector<uint8_t> data(24);
  for (int i = 0; i < 6; ++i) {
    const float v = 0.5f * i;
    std::memcpy(data.data() + 4 * i, &v, 4);
  }
  w.add_tensor("w", kGgmlF32, {3, 2}, data);
  w.write(dir.file("a.gguf"));
  const std::string written = read_file(dir.file("a.gguf"));
  // The writer pads the last tensor to the alignment too (as llama.cpp's gguf-py does).
  std::string expected = hand_made_gguf(/*with_crc=*/true);
  expected.resize((expected.size() + 31) / 32 * 32, '\0');
  EXPECT_EQ(written, expected);
}

TEST(Gguf, ReadsTheSpecsBytes) {
  TempDir dir;
  write_bytes(dir.file("a.gguf"), hand_made_gguf());
  EXPECT_TRUE(is_gguf_file(dir.file("a.gguf")));
  GgufReader r(dir.file("a.gguf"));
  EXPECT_EQ(r.version(), 3u);
  EXPECT_EQ(r.get_string("general.architecture"), "llama");
  EXPECT_EQ(r.get_uint("llama.block_count"), 5u);
  ASSERT_EQ(r.tensors().size(), 1u);
  const GgufTensorInfo* t = r.find("w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(t->bytes, 24u);
  float v[6];
  std::memcpy(v, r.data(*t), sizeof v);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v[i], 0.5f * i);
  EXPECT_THROW(r.get_uint("general.architecture"), Error);  // a string, not an integer
  EXPECT_THROW(r.get_string("missing.key"), Error);
}

// A byte changed in a tensor chainlm wrote (a bad download or copy) loaded as weights nobody
// trained. Reading the tensor checks its recorded CRC-32, opening the file the metadata's; a file
// of another tool, recording none, reads unchecked; a recorded array that does not fit the
// tensors is refused.
TEST(Gguf, ACorruptTensorFailsItsChecksum) {
  TempDir dir;
  write_bytes(dir.file("good.gguf"), hand_made_gguf(true));
  {
    GgufReader r(dir.file("good.gguf"));
    EXPECT_TRUE(r.has_checksums());
    float first;
    std::memcpy(&first, r.data(*r.find("w")), sizeof first);
    EXPECT_EQ(first, 0.0f);
  }
  std::string bad = hand_made_gguf(true);
  bad[bad.size() - 5] ^= 0x01;  // one bit of the last value
  write_bytes(dir.file("bad.gguf"), bad);
  GgufReader r(dir.file("bad.gguf"));  // the header is intact
  try {
    r.data(*r.find("w"));
    FAIL() << "a corrupt tensor was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("bad.gguf") + ": tensor 'w' fails its checksum"),
              std::string::npos)
        << e.what();
  }
  // A byte of the metadata (the architecture's name here; a tokenizer's piece alike): refused on
  // opening.
  std::string renamed = hand_made_gguf(true);
  renamed[renamed.find("llama")] = 'L';
  write_bytes(dir.file("renamed.gguf"), renamed);
  EXPECT_NE(error_of(dir.file("renamed.gguf")).find("the metadata fails its checksum"),
            std::string::npos)
      << error_of(dir.file("renamed.gguf"));
  // Without the key (another tool's file), the same bytes read as they are.
  std::string unchecked = hand_made_gguf(false);
  unchecked[unchecked.size() - 5] ^= 0x01;
  write_bytes(dir.file("other.gguf"), unchecked);
  GgufReader o(dir.file("other.gguf"));
  EXPECT_FALSE(o.has_checksums());
  EXPECT_NO_THROW(o.data(*o.find("w")));
  // A file another tool rewrote, keeping chainlm's records among its own (llama-quantize): the
  // tool's file now, its copied sums stale: read unchecked, not refused as corrupt.
  std::string rewritten = hand_made_gguf(true, 1, true);
  rewritten[rewritten.size() - 5] ^= 0x01;
  write_bytes(dir.file("rewritten.gguf"), rewritten);
  GgufReader rw(dir.file("rewritten.gguf"));
  EXPECT_FALSE(rw.has_checksums());
  EXPECT_EQ(rw.get_uint("general.file_type"), 0u);
  EXPECT_NO_THROW(rw.data(*rw.find("w")));
  // Two CRCs for one tensor: refused on opening, naming the key.
  GgufWriter w;
  w.add_int32s("chainlm.tensor_crc32", {1, 2});  // as a user's edit might leave it
  w.add_tensor("w", kGgmlF32, {1}, std::vector<uint8_t>(4));
  EXPECT_THROW(w.write(dir.file("x.gguf")), Error);  // the writer's own key
  write_bytes(dir.file("twice.gguf"), hand_made_gguf(true, 2));
  EXPECT_NE(error_of(dir.file("twice.gguf")).find("chainlm.tensor_crc32"), std::string::npos)
      << error_of(dir.file("twice.gguf"));
}

TEST(Gguf, EveryValueTypeRoundTrips) {
  TempDir dir;
  GgufWriter w;
  w.add_string("s", "text with ünïcode");
  w.add_uint32("u", 4000000000u);
  w.add_int32("i", -7);
  w.add_float32("f", 1.5e-5f);
  w.add_bool("b", true);
  w.add_strings("ss", {"a", "", "▁piece"});
  w.add_float32s("ff", {-1.0f, 0.25f});
  w.add_int32s("ii", {1, -2, 3});
  w.add_uint8s("bytes", std::string("\x00\xff\x10", 3));
  // Q8_0 and Q4_0 tensors: 34 and 18 bytes per 32-element row block.
  w.add_tensor("q8", kGgmlQ8_0, {64, 3}, std::vector<uint8_t>(3 * 68, 1));
  w.add_tensor("q4", kGgmlQ4_0, {32, 1}, std::vector<uint8_t>(18, 2));
  w.write(dir.file("v.gguf"));
  GgufReader r(dir.file("v.gguf"));
  EXPECT_EQ(r.get_string("s"), "text with ünïcode");
  EXPECT_EQ(r.get_uint("u"), 4000000000u);
  EXPECT_EQ(r.value("i").i, -7);
  EXPECT_THROW(r.get_uint("i"), Error);  // negative
  EXPECT_EQ(r.get_float("f"), 1.5e-5f);
  EXPECT_TRUE(r.get_bool("b"));
  EXPECT_EQ(r.value("ss").strings, (std::vector<std::string>{"a", "", "▁piece"}));
  EXPECT_EQ(r.value("ff").floats, (std::vector<double>{-1.0, 0.25}));
  EXPECT_EQ(r.value("ii").ints, (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(r.value("bytes").bytes, std::string("\x00\xff\x10", 3));
  EXPECT_EQ(r.value("bytes").element(1), 255u);
  EXPECT_EQ(r.keys().front(), "s");  // file order
  EXPECT_EQ(r.find("q8")->bytes, 3u * 68);
  EXPECT_EQ(r.find("q4")->offset % 32, 0u);
  EXPECT_EQ(r.data(*r.find("q4"))[17], 2);
  EXPECT_EQ(r.value("ss").describe(), "[string x 3] \"a\", \"\", \"▁piece\"");
}

TEST(Gguf, WriterRefusesInconsistentTensors) {
  GgufWriter w;
  EXPECT_THROW(w.add_tensor("q", kGgmlQ8_0, {48, 1}, std::vector<uint8_t>(51)), Error);  // not whole blocks
  EXPECT_THROW(w.add_tensor("f", kGgmlF32, {4, 2}, std::vector<uint8_t>(31)), Error);   // wrong size
  w.add_uint32("k", 1);
  EXPECT_THROW(w.add_uint32("k", 2), Error);
}

TEST(Gguf, EveryTruncationIsAClearError) {
  TempDir dir;
  const std::string good = hand_made_gguf();
  for (size_t n = 0; n < good.size(); ++n) {
    write_bytes(dir.file("t.gguf"), good.substr(0, n));
    const std::string e = error_of(dir.file("t.gguf"));
    EXPECT_TRUE(e.find("truncated") != std::string::npos || e.find("not a GGUF file") != std::string::npos)
        << n << " bytes: " << e;
  }
}

TEST(Gguf, CorruptHeadersAreClearErrors) {
  TempDir dir;
  const std::string good = hand_made_gguf();
  auto expect_error = [&](std::string bytes, const std::string& words) {
    write_bytes(dir.file("c.gguf"), bytes);
    const std::string e = error_of(dir.file("c.gguf"));
    EXPECT_NE(e.find(words), std::string::npos) << "expected '" << words << "' in: " << e;
  };
  std::string b = good;
  b[4] = 1;  // version 1
  expect_error(b, "version 1 is not supported");
  b = good;
  b[0] = 'X';
  expect_error(b, "not a GGUF file");
  b = good;
  put<uint64_t>(b, 0);
  std::memset(&b[16], 0xff, 8);  // key/value count
  expect_error(b, "more than the file holds");
  // The uint32 value type of llama.block_count becomes 99.
  const size_t type_at = good.find("llama.block_count") + std::strlen("llama.block_count");
  b = good;
  b[type_at] = 99;
  expect_error(b, "unknown value type 99");
  // The tensor's type: Q8_0 with rows of 3 elements.
  const size_t tensor_at = good.find('w', good.find("llama.block_count") + 20);
  const size_t ttype_at = tensor_at + 1 + 4 + 16;
  b = good;
  b[ttype_at] = 8;
  expect_error(b, "not a whole number of its blocks");
  b = good;
  b[ttype_at] = 77;
  expect_error(b, "ggml type 77");
  // Its offset: misaligned, then past the end.
  b = good;
  b[ttype_at + 4] = 4;
  expect_error(b, "not a multiple of the alignment");
  b = good;
  b[ttype_at + 5] = 1;  // offset 256
  expect_error(b, "runs past the end");
  // Its dimension count.
  b = good;
  b[tensor_at + 1] = 9;
  expect_error(b, "9 dimensions");
  // A duplicate key (the writer refuses one, so its file is patched).
  GgufWriter w;
  w.add_uint32("key_a", 1);
  w.add_uint32("key_b", 2);
  w.write(dir.file("d.gguf"));
  std::string d = read_file(dir.file("d.gguf"));
  d[d.find("key_b") + 4] = 'a';
  expect_error(d, "appears twice");
}

// An array of an unused key held 8 bytes per element: 300 million took 4.4 GB to read. Arrays
// past 2^22 elements are refused (a vocabulary's hold a few hundred thousand); arrays of bytes,
// held one byte each, pass up to 256 MiB (chainlm embeds a SentencePiece model so, Gemma's 4-5 MB).
TEST(Gguf, ArraysPastAnyVocabularysAreRefused) {
  TempDir dir;
  GgufWriter w;
  w.add_int32s("x.big", std::vector<int32_t>((1u << 22) + 1, 1));
  w.write(dir.file("big.gguf"));
  EXPECT_NE(error_of(dir.file("big.gguf"))
                .find("metadata 'x.big' holds 4194305 elements; chainlm reads arrays of up to"),
            std::string::npos)
      << error_of(dir.file("big.gguf"));
  GgufWriter ok;
  ok.add_int32s("x.fits", std::vector<int32_t>(1u << 22, 1));
  ok.add_uint8s("x.model", std::string(5u << 20, '\x01'));
  ok.write(dir.file("fits.gguf"));
  const GgufReader r(dir.file("fits.gguf"));
  EXPECT_EQ(r.value("x.fits").size(), 1u << 22);
  EXPECT_EQ(r.value("x.model").bytes.size(), 5u << 20);
}

TEST(Gguf, MissingAndNonGgufFiles) {
  TempDir dir;
  EXPECT_FALSE(is_gguf_file(dir.file("missing.gguf")));
  write_bytes(dir.file("text.gguf"), "hello");
  EXPECT_FALSE(is_gguf_file(dir.file("text.gguf")));
  EXPECT_NE(error_of(dir.file("text.gguf")).find("not a GGUF file"), std::string::npos);
  EXPECT_NE(error_of(dir.file("missing.gguf")).find("cannot open"), std::string::npos);
}

}  // namespace
}  // namespace chainlm
