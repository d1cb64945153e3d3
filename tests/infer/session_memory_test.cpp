// InferenceSession::memory_bytes (what serving budgets per session) against what a session
// really allocates.
#include <gtest/gtest.h>

#include "core/allocated_bytes.h"
#include "core/error.h"
#include "core/memory.h"
#include "infer/session.h"
#include "model/model.h"

namespace chainlm {
namespace {

ModelConfig long_context_config(bool phd) {
  ModelConfig c;
  c.dim = 256;
  c.n_heads = 8;
  c.n_kv_heads = 8;
  c.ffn_dim = 768;
  c.n_layers = 8;
  c.vocab_size = 512;
  c.max_seq_len = 8192;
  c.chains = {1, 1};
  if (phd) {
    c.phd.repeat = 4;
    c.phd.window = 16;
    c.phd.chunk = 32;
  }
  validate_config(c, "test");
  return c;
}

// Within 10% below and 25% above (allocator rounding). Measured as resident memory, or the
// allocator's count under AddressSanitizer (tests/core/allocated_bytes.h).
TEST(SessionMemory, ASessionAllocatesWhatMemoryBytesSays) {
  for (bool phd : {false, true}) {
    const ModelConfig c = long_context_config(phd);
    Model model(c);
    const size_t expected = InferenceSession::memory_bytes(c);
    ASSERT_GT(expected, 100u << 20);  // the KV cache of 8 layers x 8192 positions dominates
    const uint64_t before = testing::allocated_bytes();
    InferenceSession session(model);
    const uint64_t grown = testing::allocated_bytes() - before;
    EXPECT_GE(grown, expected * 9 / 10) << "phd " << phd;
    EXPECT_LE(grown, expected * 5 / 4) << "phd " << phd;
    EXPECT_GE(expected, session.cache().bytes_allocated());
  }
}

// generate sizes its session to the prompt and the tokens it makes: a model of a long context
// allocated the whole context's cache for a few tokens (20 GiB for a 16M context). A session of
// 64 positions holds 64 rows and refuses a 65th; its memory_bytes says so.
TEST(SessionMemory, ASessionOfFewerPositionsHoldsThoseAlone) {
  const ModelConfig c = long_context_config(false);
  Model model(c);
  model.init_random(1);
  const size_t full = InferenceSession::memory_bytes(c),
               few = InferenceSession::memory_bytes(c, 512, KvCacheType::F32, 64);
  EXPECT_LT(few * 10, full);  // the scratch of 512-row passes stays
  const uint64_t before = testing::allocated_bytes();
  InferenceSession session(model, 512, KvCacheType::F32, 64);
  const uint64_t grown = testing::allocated_bytes() - before;
  EXPECT_LE(grown, few * 5 / 4);
  EXPECT_EQ(session.capacity(), 64);
  std::vector<int> prompt(64, 7);
  EXPECT_NO_THROW(session.prefill(prompt, 2));
  try {
    session.decode(7, 2);
    ADD_FAILURE() << "a 65th position was written into a session of 64";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("longer than this session holds (64)"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(InferenceSession(model, 512, KvCacheType::F32, 100000).capacity(), c.max_seq_len);
}

// A window the config allows, close to every hidden token of the longest sequence (W < (K-1)
// max_seq_len), doubled for the ring, overflowed an int: `info` showed a ring of -1,140,588,042
// rows (a user trial). The ring holds at most every hidden token plus a pass's, which the limits
// on K and max_seq_len keep within an int; the memory estimate counts at least the ring's bytes.
TEST(SessionMemory, TheRingOfTheLargestWindowIsCountedWithoutOverflow) {
  ModelConfig c;
  c.dim = 64;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.ffn_dim = 176;
  c.n_layers = 2;
  c.vocab_size = 258;
  c.max_seq_len = 1 << 24;
  c.phd.repeat = 64;
  c.phd.window = 1056964607;  // (K-1) max_seq_len - 1
  validate_config(c, "test");
  const long rows = InferenceSession::phd_ring_rows(c);
  const long hidden_all = 63L * (1 << 24);
  // Every hidden token, and a pass's beside them (a pass of a bounded prefill runs up to
  // max_seq_len positions here, so up to as many hidden tokens again).
  EXPECT_GT(rows, hidden_all);
  EXPECT_LE(rows, 2 * hidden_all);
  EXPECT_EQ(InferenceSession::phd_ring_bytes(c), 2u * 2 * (size_t)rows * 64 * sizeof(float));
  EXPECT_GE(InferenceSession::memory_bytes(c), InferenceSession::phd_ring_bytes(c));
  // A small window keeps its two windows' room beside the (K-1) P rows of a pass.
  c.phd.window = 16;
  EXPECT_EQ((InferenceSession::phd_ring_rows(c) - 32) % 63, 0);
}

}  // namespace
}  // namespace chainlm
