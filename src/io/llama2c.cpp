// Legacy llama2.c checkpoints: the 7-int32 header of run.c's Config, then float32 arrays in
// the order of run.c's memory_map_weights.
#include "io/llama2c.h"

#include <bit>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace chainlm {

static_assert(std::endian::native == std::endian::little,
              "llama2.c files are little-endian and read by memcpy");

namespace {

constexpr int64_t kHeaderBytes = 7 * 4;
constexpr uint32_t kVersionedMagic = 0x616b3432;  // "ak42": export.py --version 1/2

// Why raw is not a plausible legacy header ("" when it is); fills h either way.
std::string header_problem(const int32_t raw[7], Llama2cHeader& h) {
  h.dim = raw[0];
  h.hidden_dim = raw[1];
  h.n_layers = raw[2];
  h.n_heads = raw[3];
  h.n_kv_heads = raw[4];
  const int64_t vocab = raw[5];
  h.shared_classifier = vocab > 0;
  h.vocab_size = static_cast<int>(vocab < 0 ? -vocab : vocab);
  h.seq_len = raw[6];
  auto in_range = [](int64_t v, int64_t hi) { return v >= 1 && v <= hi; };
  if (!in_range(h.dim, 1 << 16)) return cat("dim ", raw[0], " is outside 1..65536");
  if (!in_range(h.hidden_dim, 1 << 20)) return cat("hidden_dim ", raw[1], " is outside 1..1048576");
  if (!in_range(h.n_layers, 4096)) return cat("n_layers ", raw[2], " is outside 1..4096");
  if (!in_range(h.n_heads, h.dim))
    return cat("n_heads ", raw[3], " is outside 1..dim (", h.dim, ")");
  if (!in_range(h.n_kv_heads, h.n_heads))
    return cat("n_kv_heads ", raw[4], " is outside 1..n_heads (", h.n_heads, ")");
  if (vocab == 0 || vocab < -(1 << 24) || vocab > (1 << 24))
    return cat("vocab_size ", raw[5], " is 0 or its magnitude exceeds 16777216");
  if (!in_range(h.seq_len, 1 << 24)) return cat("seq_len ", raw[6], " is outside 1..16777216");
  if (h.dim % h.n_heads != 0)
    return cat("dim ", h.dim, " is not a multiple of n_heads ", h.n_heads);
  if (h.n_heads % h.n_kv_heads != 0)
    return cat("n_heads ", h.n_heads, " is not a multiple of n_kv_heads ", h.n_kv_heads);
  if (h.head_size() % 2 != 0)
    return cat("head size dim/n_heads = ", h.head_size(), " is odd (RoPE rotates pairs)");
  return "";
}

// Float counts of the arrays, in file order.
struct Sizes {
  int64_t emb, rms, wq, wkv, wo, w13, w2, rms_final, freq, wcls;
};

Sizes sizes_of(const Llama2cHeader& h) {
  const int64_t D = h.dim, F = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const int64_t KV = h.kv_dim();
  return Sizes{V * D,
               L * D,
               L * D * D,
               L * KV * D,
               L * D * D,
               L * F * D,
               L * D * F,
               D,
               (int64_t)h.seq_len * h.head_size() / 2,
               h.shared_classifier ? 0 : V * D};
}

int64_t file_size_or(const std::string& path, int64_t fallback) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return fallback;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? fallback : static_cast<int64_t>(size);
}

// Reads the first 7 int32 of path (fewer bytes than that: returns the count read).
int64_t read_raw_header(const std::string& path, int32_t raw[7]) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return -1;
  char bytes[kHeaderBytes] = {};
  in.read(bytes, kHeaderBytes);
  std::memcpy(raw, bytes, kHeaderBytes);
  return in.gcount();
}

}  // namespace

int64_t Llama2cHeader::file_bytes() const {
  const Sizes s = sizes_of(*this);
  const int64_t floats = s.emb + 2 * s.rms + s.wq + 2 * s.wkv + s.wo + 2 * s.w13 + s.w2 +
                         s.rms_final + 2 * s.freq + s.wcls;
  return kHeaderBytes + 4 * floats;
}

bool is_llama2c_checkpoint(const std::string& path) {
  const int64_t size = file_size_or(path, -1);
  if (size < kHeaderBytes) return false;
  int32_t raw[7];
  if (read_raw_header(path, raw) != kHeaderBytes) return false;
  Llama2cHeader h;
  return header_problem(raw, h).empty() && h.file_bytes() == size;
}

Llama2cWeights read_llama2c(const std::string& path) {
  const std::string what = cat(path, ": not a llama2.c checkpoint: ");
  std::error_code ec;
  CHAINLM_CHECK(std::filesystem::exists(path, ec), path, ": no such file");
  CHAINLM_CHECK(std::filesystem::is_regular_file(path, ec), what, "not a regular file");
  const int64_t size = file_size_or(path, -1);
  int32_t raw[7];
  const int64_t got = read_raw_header(path, raw);
  CHAINLM_CHECK(got >= 0, path, ": cannot open for reading");
  uint32_t magic = 0;
  if (got >= 4) std::memcpy(&magic, raw, 4);
  CHAINLM_CHECK(magic != kVersionedMagic, what, "it starts with the magic \"ak42\" of llama2.c's ",
                "versioned export (export.py --version 1 or 2); only the legacy format "
                "(export.py --version 0, as in Karpathy's tinyllamas) is supported");
  CHAINLM_CHECK(got < 8 || std::memcmp(raw, "CLMTOKS1", 8) != 0, what,
                "it is a chainlm token shard (magic CLMTOKS1)");
  CHAINLM_CHECK(got == kHeaderBytes, what, "truncated: the header needs ", kHeaderBytes,
                " bytes, file has ", size);
  Llama2cWeights w;
  const std::string problem = header_problem(raw, w.h);
  CHAINLM_CHECK(problem.empty(), what, "bad header: ", problem,
                is_llama2c_tokenizer(path)
                    ? " (the file is a llama2.c tokenizer.bin: pass it as the tokenizer)"
                    : "");
  const int64_t expected = w.h.file_bytes();
  CHAINLM_CHECK(size >= expected, what, "truncated: expected ", expected, " bytes, file has ", size,
                " (header: dim ", w.h.dim, ", hidden_dim ", w.h.hidden_dim, ", n_layers ",
                w.h.n_layers, ", n_heads ", w.h.n_heads, ", n_kv_heads ", w.h.n_kv_heads,
                ", vocab_size ", raw[5], ", seq_len ", w.h.seq_len, ")");
  CHAINLM_CHECK(size == expected, what, "expected ", expected, " bytes, file has ", size, " (",
                size - expected, " bytes more than its header describes)");

  std::ifstream in(path, std::ios::binary);
  CHAINLM_CHECK(in.good(), path, ": cannot open for reading");
  in.seekg(kHeaderBytes);
  auto read_floats = [&](std::vector<float>& v, int64_t n, const char* name) {
    v.resize(static_cast<size_t>(n));
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * 4));
    CHAINLM_CHECK(in.gcount() == n * 4, path, ": read error in ", name,
                  " (the file changed while being read?)");
  };
  const Sizes s = sizes_of(w.h);
  read_floats(w.token_embedding, s.emb, "token_embedding_table");
  read_floats(w.rms_att, s.rms, "rms_att_weight");
  read_floats(w.wq, s.wq, "wq");
  read_floats(w.wk, s.wkv, "wk");
  read_floats(w.wv, s.wkv, "wv");
  read_floats(w.wo, s.wo, "wo");
  read_floats(w.rms_ffn, s.rms, "rms_ffn_weight");
  read_floats(w.w1, s.w13, "w1");
  read_floats(w.w2, s.w2, "w2");
  read_floats(w.w3, s.w13, "w3");
  read_floats(w.rms_final, s.rms_final, "rms_final_weight");
  in.seekg(2 * s.freq * 4, std::ios::cur);  // freq_cis_real, freq_cis_imag: RoPE is recomputed
  if (!w.h.shared_classifier) read_floats(w.wcls, s.wcls, "wcls");
  return w;
}

void write_llama2c(const Llama2cWeights& w, const std::string& path) {
  Llama2cHeader h = w.h;
  int32_t raw[7] = {h.dim,     h.hidden_dim, h.n_layers,
                    h.n_heads, h.n_kv_heads, h.shared_classifier ? h.vocab_size : -h.vocab_size,
                    h.seq_len};
  const std::string problem = header_problem(raw, h);
  CHAINLM_CHECK(problem.empty(), path, ": cannot write llama2.c checkpoint: ", problem);
  const Sizes s = sizes_of(h);
  std::string bytes(reinterpret_cast<const char*>(raw), kHeaderBytes);
  bytes.reserve(static_cast<size_t>(h.file_bytes()));
  auto put = [&](const std::vector<float>& v, int64_t n, const char* name) {
    CHAINLM_CHECK((int64_t)v.size() == n, path, ": cannot write llama2.c checkpoint: ", name,
                  " has ", v.size(), " floats, the header needs ", n);
    bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  };
  put(w.token_embedding, s.emb, "token_embedding");
  put(w.rms_att, s.rms, "rms_att");
  put(w.wq, s.wq, "wq");
  put(w.wk, s.wkv, "wk");
  put(w.wv, s.wkv, "wv");
  put(w.wo, s.wo, "wo");
  put(w.rms_ffn, s.rms, "rms_ffn");
  put(w.w1, s.w13, "w1");
  put(w.w2, s.w2, "w2");
  put(w.w3, s.w13, "w3");
  put(w.rms_final, s.rms_final, "rms_final");
  bytes.append(static_cast<size_t>(2 * s.freq * 4), '\0');
  put(w.wcls, s.wcls, "wcls");
  write_file_atomic(path, bytes);
}

}  // namespace chainlm
