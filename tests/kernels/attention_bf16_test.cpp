// Attention's tile products with bf16 operands (AttentionShape::bf16_products, bf16 training):
// the tile matmul against a double product of the rounded operands, and the whole forward and
// backward against double within a bound derived from bf16 rounding (attention_bf16_bound.h).
// Builds without AVX512-BF16 keep fp32 products: there the flag must change no bit.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <vector>

#include "attention_bf16_bound.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "kernels/attention.h"
#include "kernels/attention_tiles.h"
#include "kernels/bf16.h"

namespace chainlm {
namespace {

using test::random_vector;

// A tile product's operands: A(m, k) = A[m*sam + k*sak] with each of the three layouts the
// passes use (k contiguous, m contiguous) or neither; rows of A zero outside kbits[m].
struct TileCase {
  int M, N, K;
  int layout;  // 0: sak = 1, 1: sam = 1, 2: neither contiguous
  bool accumulate, trim_n, trim_k;
};

void run_tile_case(const TileCase& t, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "M " << t.M << " N " << t.N << " K " << t.K << " layout " << t.layout << " acc "
               << t.accumulate << " trim n/k " << t.trim_n << t.trim_k);
  Rng rng(seed);
  const long sam = t.layout == 0 ? t.K + 3 : t.layout == 1 ? 1 : 2 * (t.K + 1);
  const long sak = t.layout == 0 ? 1 : t.layout == 1 ? t.M + 5 : 2;
  const long ldb = t.N + 7, ldc = t.N + 2;
  std::vector<float> A((size_t)(t.M * sam + t.K * sak + 8), 0.0f), B((size_t)t.K * ldb);
  for (float& x : B) x = rng.normal();
  std::vector<uint64_t> nbits(t.M, ~0ull), kbits(t.M, ~0ull);
  for (int m = 0; m < t.M; ++m) {
    if (t.trim_n) nbits[m] = rng.next_u64() & ((t.N >= 64 ? 0 : 1ull << t.N) - 1);
    if (t.trim_k) kbits[m] = rng.next_u64() & ((t.K >= 64 ? 0 : 1ull << t.K) - 1);
    for (int k = 0; k < t.K; ++k)
      if (kbits[m] >> (k & 63) & 1) A[m * sam + k * sak] = rng.normal();
  }
  std::vector<float> C0((size_t)t.M * ldc);
  for (float& x : C0) x = rng.normal();
  std::vector<float> C = C0, Cf = C0;
  attn::tile_product(true, t.M, t.N, t.K, A.data(), sam, sak, B.data(), ldb, C.data(), ldc,
                     t.accumulate, t.trim_n ? nbits.data() : nullptr,
                     t.trim_k ? kbits.data() : nullptr);
#if CHAINLM_ATTENTION_BF16
  // Products of bf16 operands are exact in fp32; only the fp32 sums round, each by 2^-24 of
  // the running magnitude: at most (K/2 + 2) 2^-23 of sum |a b| (plus |c| when accumulating).
  for (int m = 0; m < t.M; ++m)
    for (int n = 0; n < t.N; ++n) {
      if (!(nbits[m] >> (n & 63) & 1)) continue;  // a trimmed column may be left unwritten
      double want = t.accumulate ? C0[m * ldc + n] : 0.0, mag = std::fabs(want);
      for (int k = 0; k < t.K; ++k) {
        const double ab =
            (double)from_bf16(to_bf16(A[m * sam + k * sak])) * from_bf16(to_bf16(B[k * ldb + n]));
        want += ab;
        mag += std::fabs(ab);
      }
      ASSERT_NEAR(C[m * ldc + n], want, (t.K / 2 + 2) * std::ldexp(mag, -23) + 1e-30)
          << "m " << m << " n " << n;
    }
#else
  // No bf16 products in this build: the fp32 tile matmul, bit for bit.
  attn::tile_gemm(t.M, t.N, t.K, A.data(), sam, sak, B.data(), ldb, Cf.data(), ldc, t.accumulate,
                  t.trim_n ? nbits.data() : nullptr, t.trim_k ? kbits.data() : nullptr);
  for (int m = 0; m < t.M; ++m)
    for (int n = 0; n < t.N; ++n) {
      if (nbits[m] >> (n & 63) & 1) {
        ASSERT_EQ(C[m * ldc + n], Cf[m * ldc + n]) << "m " << m << " n " << n;
      }
    }
#endif
}

TEST(AttentionBf16, TileProductIsTheProductOfRoundedOperands) {
  uint64_t seed = 7100;
  for (int layout : {0, 1, 2})
    for (const auto& [M, N, K] : std::vector<std::array<int, 3>>{{1, 1, 1},
                                                                 {6, 64, 64},
                                                                 {64, 64, 64},
                                                                 {13, 37, 33},
                                                                 {64, 80, 64},
                                                                 {7, 130, 20},
                                                                 {64, 64, 63}})
      for (bool acc : {false, true})
        for (int trim = 0; trim < 3; ++trim)
          run_tile_case({M, N, K, layout, acc, trim == 1 && N <= 64, trim == 2 && K <= 64}, seed++);
}

struct Case {
  int batch, len, n_heads, kv_heads, head_dim;
};

AttentionShape shape_of(const Case& c, const std::vector<int>& kv_map, bool bf16) {
  AttentionShape s;
  s.batch = c.batch;
  s.q_len = s.kv_len = c.len;
  s.n_heads = c.n_heads;
  s.head_dim = c.head_dim;
  s.q_stride = c.n_heads * c.head_dim;
  s.o_stride = s.q_stride + 3;
  s.kv_stride = c.kv_heads * c.head_dim;
  s.kv_head_of = kv_map.data();
  s.scale = 1.0f / std::sqrt((float)c.head_dim);
  s.bf16_products = bf16;
  return s;
}

struct Outputs {
  std::vector<float> o, lse, dq, dk, dv;
};

Outputs run(const AttentionShape& s, const std::vector<float>& q, const std::vector<float>& k,
            const std::vector<float>& v, const std::vector<float>& dout) {
  Outputs r{std::vector<float>(dout.size()),
            std::vector<float>((size_t)s.batch * s.n_heads * s.q_len), std::vector<float>(q.size()),
            std::vector<float>(k.size()), std::vector<float>(v.size())};
  attention_forward(s, q.data(), k.data(), v.data(), r.o.data(), r.lse.data());
  attention_backward(s, q.data(), k.data(), v.data(), r.o.data(), r.lse.data(), dout.data(),
                     r.dq.data(), r.dk.data(), r.dv.data());
  return r;
}

// Every element of got within tol of want; returns the largest |got - want| / tol seen.
double check_within(const std::vector<float>& got, const std::vector<double>& want,
                    const std::vector<double>& tol, const char* what) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]), bound = tol[i] + 1e-12;
    EXPECT_LE(err, bound) << what << "[" << i << "] = " << got[i] << ", exact " << want[i];
    if (err > bound) return err / bound;
    worst = std::max(worst, err / bound);
  }
  return worst;
}

TEST(AttentionBf16, ForwardAndBackwardStayWithinTheBoundOfBf16Rounding) {
  // Partial tiles, odd head dims and odd tile rows (odd reductions), GQA.
  const Case cases[] = {{2, 131, 4, 2, 64}, {1, 200, 2, 2, 33}, {1, 70, 3, 1, 80}};
  uint64_t seed = 7300;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "T " << c.len << " hd " << c.head_dim);
    std::vector<int> kv_map(c.n_heads);
    for (int h = 0; h < c.n_heads; ++h) kv_map[h] = h * c.kv_heads / c.n_heads;
    const AttentionShape s = shape_of(c, kv_map, true);
    const auto q = random_vector((size_t)c.batch * c.len * s.q_stride, seed, 2.0f);
    const auto k = random_vector((size_t)c.batch * c.len * s.kv_stride, seed + 1);
    const auto v = random_vector((size_t)c.batch * c.len * s.kv_stride, seed + 2);
    auto dout = random_vector((size_t)c.batch * c.len * s.o_stride, seed + 3);
    seed += 10;
    const Outputs bf = run(s, q, k, v, dout);
    const test::Bf16Bounded want =
        test::bf16_bounded_attention(s, q, k, v, dout, [](int i, int j) { return j <= i; });
    double worst = 0;
    worst = std::max(worst, check_within(bf.o, want.o, want.o_tol, "o"));
    worst = std::max(worst, check_within(bf.lse, want.lse, want.lse_tol, "lse"));
    worst = std::max(worst, check_within(bf.dq, want.dq, want.dq_tol, "dq"));
    worst = std::max(worst, check_within(bf.dk, want.dk, want.dk_tol, "dk"));
    worst = std::max(worst, check_within(bf.dv, want.dv, want.dv_tol, "dv"));
    const Outputs f32 = run(shape_of(c, kv_map, false), q, k, v, dout);
    size_t differ_o = 0, differ_dq = 0;  // the forward's and the backward's products
    for (size_t i = 0; i < bf.o.size(); ++i) differ_o += bf.o[i] != f32.o[i];
    for (size_t i = 0; i < bf.dq.size(); ++i) differ_dq += bf.dq[i] != f32.dq[i];
#if CHAINLM_ATTENTION_BF16
    // bf16 operands really ran: results off fp32's by bf16 rounding, i.e. within the bound
    // but visibly (a bound loose enough to pass anything would show as worst ~ 0).
    EXPECT_GT(differ_o, bf.o.size() / 2) << "the forward's bf16 products gave fp32's results";
    EXPECT_GT(differ_dq, bf.dq.size() / 2) << "the backward's bf16 products gave fp32's results";
    EXPECT_GT(worst, 1e-3) << "the bound is far looser than the errors it bounds";
#else
    EXPECT_EQ(differ_o + differ_dq, 0u) << "without AVX512-BF16 the flag must change nothing";
#endif
  }
}

}  // namespace
}  // namespace chainlm
