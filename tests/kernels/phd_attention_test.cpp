// PHD attention masks (SPEC B2) and the kernels that run them on compact key views.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention_bf16_bound.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "gradcheck.h"
#include "kernels/attention.h"

namespace chainlm {
namespace {

using test::expect_close;
using test::random_vector;

struct PhdParams {
  int K, W, C;
};

// SPEC B2 written out literally (0-based; query = copy j of position n, key = copy i of
// position m), independently of AttentionMask.
bool spec_allowed(const PhdParams& p, int n, int j, int m, int i) {
  const bool phd = (i == 0 && m < n) || (m == n && i <= j);
  if (phd) return true;
  if (p.W == 0) return false;
  auto h = [&](int pos, int c) { return pos * (p.K - 1) + (c - 1); };
  const bool window = i >= 1 && j >= 1 && 0 < h(n, j) - h(m, i) && h(n, j) - h(m, i) <= p.W;
  if (!window) return false;
  return p.C == 0 || m / p.C == n / p.C;
}

bool spec_allowed_rows(const PhdParams& p, int qrow, int krow) {
  return spec_allowed(p, qrow / p.K, qrow % p.K, krow / p.K, krow % p.K);
}

std::vector<PhdParams> all_params() {
  std::vector<PhdParams> v;
  for (int K : {2, 3, 4, 5})
    for (int W : {0, 1, 2, 3, 7, 16})
      for (int C : {0, 1, 2, 3, 8}) {
        if (W == 0 && C > 0) continue;
        v.push_back({K, W, C});
      }
  return v;
}

std::string name(const PhdParams& p) {
  return ::testing::PrintToString(p.K) + "-" + ::testing::PrintToString(p.W) + "-" +
         ::testing::PrintToString(p.C);
}

TEST(PhdMask, KindFollowsWindowAndChunk) {
  EXPECT_EQ(AttentionMask::phd(1, 0, 0).kind, AttentionMask::Kind::Causal);
  EXPECT_EQ(AttentionMask::phd(2, 0, 0).kind, AttentionMask::Kind::Phd);
  EXPECT_EQ(AttentionMask::phd(2, 16, 0).kind, AttentionMask::Kind::PhdSwa);
  EXPECT_EQ(AttentionMask::phd(2, 16, 32).kind, AttentionMask::Kind::PhdCswa);
}

TEST(PhdMask, RuleMatchesBruteForceEnumerationOfSpec) {
  const int T = 23;  // positions
  for (const PhdParams& p : all_params()) {
    SCOPED_TRACE(name(p));
    const AttentionMask mask = AttentionMask::phd(p.K, p.W, p.C);
    const int R = T * p.K;
    long allowed_pairs = 0;
    for (int q = 0; q < R; ++q)
      for (int k = 0; k < R; ++k) {
        const bool want = spec_allowed_rows(p, q, k);
        ASSERT_EQ(mask.allowed(q, k), want) << "query row " << q << " key row " << k;
        allowed_pairs += want;
      }
    // Linear in K: every row attends at most its position's originals, its own copies and W.
    EXPECT_LE(allowed_pairs, (long)R * (T + p.K + p.W));
    // Originals never attend hidden tokens; the hidden interval is exactly the allowed
    // hidden keys of every hidden query.
    for (int n = 0; n < T; ++n)
      for (int j = 0; j < p.K; ++j) {
        int64_t lo, hi;
        mask.phd_hidden_interval(n, j, &lo, &hi);
        for (int m = 0; m < T; ++m)
          for (int i = 1; i < p.K; ++i) {
            const int64_t h = (int64_t)m * (p.K - 1) + i - 1;
            ASSERT_EQ(lo <= h && h < hi, spec_allowed(p, n, j, m, i))
                << "n " << n << " j " << j << " m " << m << " i " << i;
          }
        if (j == 0) {
          EXPECT_EQ(lo, hi);
        }
      }
  }
}

TEST(PhdMask, TileFunctionsAgreeWithTheRule) {
  const int T = 19;
  Rng rng(5);
  for (const PhdParams& p : all_params()) {
    SCOPED_TRACE(name(p));
    const AttentionMask mask = AttentionMask::phd(p.K, p.W, p.C);
    const int R = T * p.K;
    for (int trial = 0; trial < 40; ++trial) {
      const int q0 = (int)rng.below(R), k0 = (int)rng.below(R);
      const int nq = 1 + (int)rng.below(std::min(64, R - q0));
      const int nk = 1 + (int)rng.below(std::min(64, R - k0));
      bool any = false, all = true;
      for (int i = 0; i < nq; ++i) {
        const uint64_t bits = mask.key_bits(q0 + i, k0, nk);
        for (int j = 0; j < nk; ++j) {
          const bool a = spec_allowed_rows(p, q0 + i, k0 + j);
          ASSERT_EQ((bits >> j) & 1, (uint64_t)a);
          ASSERT_EQ((mask.query_bits(k0 + j, q0, nq) >> i) & 1, (uint64_t)a);
          any |= a;
          all &= a;
        }
      }
      const auto cover = mask.cover(q0, q0 + nq, k0, k0 + nk);
      EXPECT_EQ(cover, !any ? AttentionMask::Cover::Empty
                       : all ? AttentionMask::Cover::Full
                             : AttentionMask::Cover::Partial);
      int64_t kb, ke, qb, qe;
      mask.key_bounds(q0, q0 + nq, R, &kb, &ke);
      mask.query_bounds(k0, k0 + nk, &qb, &qe);
      for (int i = 0; i < nq; ++i)
        for (int j = 0; j < R; ++j)
          if (spec_allowed_rows(p, q0 + i, j)) {
            ASSERT_TRUE(kb <= j && j < ke);
          }
      for (int j = 0; j < nk; ++j)
        for (int i = 0; i < R; ++i)
          if (spec_allowed_rows(p, i, k0 + j)) {
            ASSERT_TRUE(qb <= i && i < qe);
          }
    }
  }
}

// --- kernels against a naive masked reference -----------------------------------------

struct Case {
  PhdParams p{2, 0, 0};
  int batch = 1, positions = 10, n_heads = 2, head_dim = 16, kv_heads = 2;
  std::vector<int> kv_map;  // empty: identity
  int rows() const { return positions * p.K; }
  AttentionShape shape() const {
    AttentionShape s;
    s.batch = batch;
    s.q_len = s.kv_len = rows();
    s.n_heads = n_heads;
    s.head_dim = head_dim;
    s.q_stride = n_heads * head_dim;
    s.o_stride = n_heads * head_dim + 5;
    s.kv_stride = kv_heads * head_dim;
    s.kv_head_of = kv_map.empty() ? nullptr : kv_map.data();
    s.scale = 1.0f / std::sqrt((float)head_dim);
    s.mask = AttentionMask::phd(p.K, p.W, p.C);
    return s;
  }
  size_t q_size() const { return (size_t)batch * rows() * n_heads * head_dim; }
  size_t o_size() const { return (size_t)batch * rows() * shape().o_stride; }
  size_t kv_size() const { return (size_t)batch * rows() * kv_heads * head_dim; }
  size_t lse_size() const { return (size_t)batch * n_heads * rows(); }
};

int kv_of(const AttentionShape& s, int h) { return s.kv_head_of ? s.kv_head_of[h] : h; }

// Double-precision masked softmax attention over the repeated stream (spec_allowed_rows);
// also the analytic backward when dout is given.
template <typename T>
void reference(const Case& c, const std::vector<T>& q, const std::vector<T>& k,
               const std::vector<T>& v, std::vector<double>& o, std::vector<double>& lse,
               const std::vector<float>* dout = nullptr, std::vector<double>* dq = nullptr,
               std::vector<double>* dk = nullptr, std::vector<double>* dv = nullptr) {
  const AttentionShape s = c.shape();
  const int R = c.rows(), hd = s.head_dim;
  o.assign(c.o_size(), 0.0);
  lse.assign(c.lse_size(), 0.0);
  if (dout) {
    dq->assign(q.size(), 0.0);
    dk->assign(k.size(), 0.0);
    dv->assign(v.size(), 0.0);
  }
  std::vector<double> p(R), dp(R);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.n_heads; ++h)
      for (int i = 0; i < R; ++i) {
        const size_t qa = ((size_t)b * R + i) * s.q_stride + (size_t)h * hd;
        const size_t oa = ((size_t)b * R + i) * s.o_stride + (size_t)h * hd;
        auto key = [&](int j) { return ((size_t)b * R + j) * s.kv_stride + (size_t)kv_of(s, h) * hd; };
        double m = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < R; ++j) {
          if (!spec_allowed_rows(c.p, i, j)) continue;
          double d = 0;
          for (int x = 0; x < hd; ++x) d += (double)q[qa + x] * (double)k[key(j) + x];
          p[j] = d * s.scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < R; ++j)
          if (spec_allowed_rows(c.p, i, j)) sum += (p[j] = std::exp(p[j] - m));
        for (int j = 0; j < R; ++j) {
          if (!spec_allowed_rows(c.p, i, j)) continue;
          p[j] /= sum;
          for (int x = 0; x < hd; ++x) o[oa + x] += p[j] * (double)v[key(j) + x];
        }
        lse[((size_t)b * s.n_heads + h) * R + i] = m + std::log(sum);
        if (!dout) continue;
        double D = 0;
        for (int j = 0; j < R; ++j) {
          if (!spec_allowed_rows(c.p, i, j)) continue;
          double d = 0;
          for (int x = 0; x < hd; ++x) d += (double)(*dout)[oa + x] * (double)v[key(j) + x];
          dp[j] = d;
          D += p[j] * d;
          for (int x = 0; x < hd; ++x) (*dv)[key(j) + x] += p[j] * (*dout)[oa + x];
        }
        for (int j = 0; j < R; ++j) {
          if (!spec_allowed_rows(c.p, i, j)) continue;
          const double ds = p[j] * (dp[j] - D) * s.scale;
          for (int x = 0; x < hd; ++x) {
            (*dq)[qa + x] += ds * (double)k[key(j) + x];
            (*dk)[key(j) + x] += ds * (double)q[qa + x];
          }
        }
      }
}

std::vector<Case> kernel_cases() {
  std::vector<Case> cases;
  const PhdParams ps[] = {{2, 0, 0}, {3, 0, 0}, {4, 0, 0},  {2, 16, 0}, {3, 5, 0},
                          {4, 16, 0}, {2, 16, 32}, {3, 4, 8}, {4, 16, 32}, {5, 3, 2}};
  int i = 0;
  for (const PhdParams& p : ps) {
    Case c;
    c.p = p;
    c.batch = 1 + i % 2;
    c.positions = 20 + 23 * (i % 4);  // 20..89 positions: up to 445 rows, several tiles
    c.n_heads = 4;
    c.head_dim = i % 3 == 0 ? 64 : 32;
    c.kv_heads = 2;
    c.kv_map = {0, 0, 1, 1};
    cases.push_back(c);
    ++i;
  }
  // One (sequence, head) pair: the forward deals query tiles to threads round-robin, each
  // work item packing only the key rows its tiles need.
  Case one;
  one.p = {3, 5, 7};
  one.positions = 150;
  one.n_heads = one.kv_heads = 1;
  one.head_dim = 32;
  cases.push_back(one);
  return cases;
}

TEST(PhdAttention, ForwardMatchesNaiveMaskedReference) {
  uint64_t seed = 10;
  for (const Case& c : kernel_cases()) {
    SCOPED_TRACE(name(c.p) + " T " + std::to_string(c.positions));
    const auto q = random_vector(c.q_size(), seed), k = random_vector(c.kv_size(), seed + 1),
               v = random_vector(c.kv_size(), seed + 2);
    std::vector<float> o(c.o_size(), 0.0f), lse(c.lse_size());
    attention_forward(c.shape(), q.data(), k.data(), v.data(), o.data(), lse.data());
    std::vector<double> ro, rlse;
    reference(c, q, k, v, ro, rlse);
    expect_close(o, ro, o.size(), 1e-5, 1e-4, "o");
    expect_close(lse, rlse, lse.size(), 1e-5, 1e-5, "lse");
    seed += 10;
  }
}

void expect_grad_close(const std::vector<float>& got, const std::vector<double>& want, double rel,
                       const char* what) {
  double scale = 1e-12;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  expect_close(got, want, got.size(), rel * scale, rel, what);
}

TEST(PhdAttention, BackwardMatchesAnalyticReference) {
  uint64_t seed = 500;
  for (const Case& c : kernel_cases()) {
    SCOPED_TRACE(name(c.p) + " T " + std::to_string(c.positions));
    const auto q = random_vector(c.q_size(), seed, 2.0f), k = random_vector(c.kv_size(), seed + 1),
               v = random_vector(c.kv_size(), seed + 2);
    const auto dout = random_vector(c.o_size(), seed + 3);
    const AttentionShape s = c.shape();
    std::vector<float> o(c.o_size()), lse(c.lse_size());
    attention_forward(s, q.data(), k.data(), v.data(), o.data(), lse.data());
    // Backward accumulates: start from a known non-zero gradient.
    std::vector<float> dq(q.size(), 0.5f), dk(k.size(), 0.5f), dv(v.size(), 0.5f);
    attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(),
                       dq.data(), dk.data(), dv.data());
    for (auto* g : {&dq, &dk, &dv})
      for (float& x : *g) x -= 0.5f;
    std::vector<double> ro, rlse, rdq, rdk, rdv;
    reference(c, q, k, v, ro, rlse, &dout, &rdq, &rdk, &rdv);
    expect_grad_close(dq, rdq, 1e-4, "dq");
    expect_grad_close(dk, rdk, 1e-4, "dk");
    expect_grad_close(dv, rdv, 1e-4, "dv");
    seed += 10;
  }
}

// bf16 tile products (bf16 training) over the repeated stream: forward and backward within the
// bound derived from bf16 rounding (attention_bf16_bound.h), and really off fp32's results
// where the build has AVX512-BF16 (unchanged bits where it has not).
TEST(PhdAttention, Bf16ProductsStayWithinTheBoundOfBf16Rounding) {
  uint64_t seed = 700;
  const auto cases = kernel_cases();
  for (const Case& c : {cases[1], cases[6], cases[9]}) {
    SCOPED_TRACE(name(c.p) + " T " + std::to_string(c.positions));
    const auto q = random_vector(c.q_size(), seed, 2.0f), k = random_vector(c.kv_size(), seed + 1),
               v = random_vector(c.kv_size(), seed + 2);
    const auto dout = random_vector(c.o_size(), seed + 3);
    seed += 10;
    std::vector<float> got[2][5];  // fp32, bf16: o, lse, dq, dk, dv
    for (int bf16 = 0; bf16 < 2; ++bf16) {
      AttentionShape s = c.shape();
      s.bf16_products = bf16;
      auto& g = got[bf16];
      g[0].assign(c.o_size(), 0.0f), g[1].assign(c.lse_size(), 0.0f);
      g[2].assign(q.size(), 0.0f), g[3].assign(k.size(), 0.0f), g[4].assign(v.size(), 0.0f);
      attention_forward(s, q.data(), k.data(), v.data(), g[0].data(), g[1].data());
      attention_backward(s, q.data(), k.data(), v.data(), g[0].data(), g[1].data(), dout.data(),
                         g[2].data(), g[3].data(), g[4].data());
    }
    const test::Bf16Bounded want = test::bf16_bounded_attention(
        c.shape(), q, k, v, dout, [&](int i, int j) { return spec_allowed_rows(c.p, i, j); });
    const std::vector<double>* exact[5] = {&want.o, &want.lse, &want.dq, &want.dk, &want.dv};
    const std::vector<double>* tol[5] = {&want.o_tol, &want.lse_tol, &want.dq_tol, &want.dk_tol,
                                         &want.dv_tol};
    size_t differ[5] = {};
    for (int x = 0; x < 5; ++x)
      for (size_t i = 0; i < got[1][x].size(); ++i) {
        ASSERT_LE(std::fabs(got[1][x][i] - (*exact[x])[i]), (*tol[x])[i] + 1e-12)
            << "output " << x << " [" << i << "]";
        differ[x] += got[1][x][i] != got[0][x][i];
      }
    if (attention_has_bf16_products()) {
      EXPECT_GT(differ[0], got[1][0].size() / 2)
          << "the forward's bf16 products gave fp32's results";
      EXPECT_GT(differ[2], got[1][2].size() / 2)
          << "the backward's bf16 products gave fp32's results";
    } else {
      EXPECT_EQ(differ[0] + differ[2], 0u) << "without AVX512-BF16 the flag must change nothing";
    }
  }
}

TEST(PhdAttention, BackwardMatchesFiniteDifferences) {
  const PhdParams ps[] = {{2, 0, 0}, {3, 2, 0}, {3, 2, 2}, {4, 5, 3}};
  uint64_t seed = 900;
  for (const PhdParams& p : ps) {
    Case c;
    c.p = p;
    c.batch = 2, c.positions = 7, c.n_heads = 2, c.head_dim = 4, c.kv_heads = 1;
    c.kv_map = {0, 0};
    SCOPED_TRACE(name(p));
    const auto q = random_vector(c.q_size(), seed, 2.0f), k = random_vector(c.kv_size(), seed + 1),
               v = random_vector(c.kv_size(), seed + 2);
    const auto w = random_vector(c.o_size(), seed + 3);
    auto loss = [&](const std::vector<double>& qq, const std::vector<double>& kk,
                    const std::vector<double>& vv) {
      std::vector<double> o, lse;
      reference(c, qq, kk, vv, o, lse);
      double l = 0;
      for (size_t i = 0; i < o.size(); ++i) l += o[i] * w[i];
      return l;
    };
    const auto qd = test::to_double(q), kd = test::to_double(k), vd = test::to_double(v);
    auto nq = test::numeric_grad([&](const std::vector<double>& x) { return loss(x, kd, vd); }, qd);
    auto nk = test::numeric_grad([&](const std::vector<double>& x) { return loss(qd, x, vd); }, kd);
    auto nv = test::numeric_grad([&](const std::vector<double>& x) { return loss(qd, kd, x); }, vd);
    const AttentionShape s = c.shape();
    std::vector<float> o(c.o_size()), lse(c.lse_size());
    attention_forward(s, q.data(), k.data(), v.data(), o.data(), lse.data());
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    attention_backward(s, q.data(), k.data(), v.data(), o.data(), lse.data(), w.data(), dq.data(),
                       dk.data(), dv.data());
    expect_grad_close(dq, nq, 1e-4, "dq");
    expect_grad_close(dk, nk, 1e-4, "dk");
    expect_grad_close(dv, nv, 1e-4, "dv");
    seed += 10;
  }
}

// The inference form: originals and hidden tokens in separate arrays, query rows = originals
// of [first_position, hidden_from) then every copy of [hidden_from, end). With every hidden
// key the rows need present, it equals the rows of the full pass over the repeated stream.
TEST(PhdAttention, SeparateKeyArraysEqualTheRepeatedStream) {
  uint64_t seed = 1300;
  for (const Case& c0 : kernel_cases()) {
    Case c = c0;
    c.batch = 1;
    SCOPED_TRACE(name(c.p) + " T " + std::to_string(c.positions));
    const int K = c.p.K, T = c.positions, hd = c.head_dim;
    const AttentionShape full = c.shape();
    const auto q = random_vector(c.q_size(), seed), k = random_vector(c.kv_size(), seed + 1),
               v = random_vector(c.kv_size(), seed + 2);
    std::vector<float> o(c.o_size()), lse(c.lse_size());
    attention_forward(full, q.data(), k.data(), v.data(), o.data(), lse.data());
    // Split the keys: originals by position, hidden tokens by hidden-stream index.
    const int kw = full.kv_stride;
    std::vector<float> ok((size_t)T * kw), ov((size_t)T * kw), hk, hv;
    for (int r = 0; r < T * K; ++r) {
      auto* dk = r % K == 0 ? &ok : &hk;
      auto* dv = r % K == 0 ? &ov : &hv;
      if (r % K == 0) {
        std::copy_n(k.begin() + (size_t)r * kw, kw, ok.begin() + (size_t)(r / K) * kw);
        std::copy_n(v.begin() + (size_t)r * kw, kw, ov.begin() + (size_t)(r / K) * kw);
      } else {
        dk->insert(dk->end(), k.begin() + (size_t)r * kw, k.begin() + (size_t)(r + 1) * kw);
        dv->insert(dv->end(), v.begin() + (size_t)r * kw, v.begin() + (size_t)(r + 1) * kw);
      }
    }
    // (first_position, hidden_from, end): decoding steps, bounded prefills, whole passes.
    struct Step {
      int p0, h0, end;
    };
    const Step steps[] = {{T - 1, T - 1, T}, {5, 5, 6}, {0, T - 3, T}, {3, 9, 14}, {0, 0, T},
                          {T / 2, T / 2, T}, {T - 1, T, T}};
    for (const Step& st : steps) {
      SCOPED_TRACE(::testing::Message() << "p0 " << st.p0 << " h0 " << st.h0 << " end " << st.end);
      const int orig_rows = st.h0 - st.p0, nrows = orig_rows + (st.end - st.h0) * K;
      std::vector<int> row_of(nrows);  // row in the repeated stream
      for (int i = 0; i < nrows; ++i)
        row_of[i] = i < orig_rows ? (st.p0 + i) * K : st.h0 * K + (i - orig_rows);
      AttentionShape s = full;
      s.q_len = nrows;
      s.kv_len = 0;
      std::vector<float> qs((size_t)nrows * s.q_stride), os((size_t)nrows * s.o_stride),
          ls((size_t)c.n_heads * nrows);
      for (int i = 0; i < nrows; ++i)
        std::copy_n(q.begin() + (size_t)row_of[i] * s.q_stride, s.q_stride,
                    qs.begin() + (size_t)i * s.q_stride);
      // Hidden keys from a window that covers every hidden key the rows attend (and a few
      // more, which the mask must exclude).
      int64_t lo = std::numeric_limits<int64_t>::max();
      for (int n = st.p0; n < st.end; ++n) {
        int64_t l, h;
        s.mask.phd_hidden_interval(n, 1, &l, &h);
        lo = std::min(lo, l);
      }
      const int64_t hfirst = std::max<int64_t>(0, lo - 3);
      const int64_t hend = std::min<int64_t>((int64_t)st.end * (K - 1), (int64_t)T * (K - 1));
      PhdKeys keys;
      keys.orig_k = ok.data(), keys.orig_v = ov.data(), keys.orig_len = st.end;
      keys.hid_k = hk.data() + hfirst * kw, keys.hid_v = hv.data() + hfirst * kw;
      keys.hidden_first = hfirst, keys.hidden_len = std::max<int64_t>(0, hend - hfirst);
      phd_attention_forward(s, PhdQueryRows{st.p0, st.h0}, keys, qs.data(), os.data(), ls.data());
      for (int i = 0; i < nrows; ++i) {
        for (int x = 0; x < c.n_heads * hd; ++x)
          ASSERT_NEAR(os[(size_t)i * s.o_stride + x], o[(size_t)row_of[i] * full.o_stride + x], 2e-5)
              << "row " << i << " (stream row " << row_of[i] << ")";
        for (int h = 0; h < c.n_heads; ++h)
          ASSERT_NEAR(ls[(size_t)h * nrows + i], lse[(size_t)h * T * K + row_of[i]], 2e-5);
      }
      // The copies copy_from..K-1 of the same positions alone (a last layer's query rows),
      // no originals: the same rows of the full pass.
      for (int cf = 1; cf < K && st.end > st.h0; ++cf) {
        SCOPED_TRACE(::testing::Message() << "copy_from " << cf);
        const int per = K - cf, n2 = (st.end - st.h0) * per;
        AttentionShape s2 = s;
        s2.q_len = n2;
        std::vector<int> row2(n2);
        std::vector<float> q2((size_t)n2 * s.q_stride), o2((size_t)n2 * s.o_stride),
            l2((size_t)c.n_heads * n2);
        for (int i = 0; i < n2; ++i) {
          row2[i] = (st.h0 + i / per) * K + cf + i % per;
          std::copy_n(q.begin() + (size_t)row2[i] * s.q_stride, s.q_stride,
                      q2.begin() + (size_t)i * s.q_stride);
        }
        phd_attention_forward(s2, PhdQueryRows{st.h0, st.h0, cf}, keys, q2.data(), o2.data(),
                              l2.data());
        for (int i = 0; i < n2; ++i) {
          for (int x = 0; x < c.n_heads * hd; ++x)
            ASSERT_NEAR(o2[(size_t)i * s.o_stride + x], o[(size_t)row2[i] * full.o_stride + x],
                        2e-5)
                << "row " << i << " (stream row " << row2[i] << ")";
          for (int h = 0; h < c.n_heads; ++h)
            ASSERT_NEAR(l2[(size_t)h * n2 + i], lse[(size_t)h * T * K + row2[i]], 2e-5);
        }
      }
    }
    seed += 10;
  }
}

// A decoding step's copies over a cache long enough that its heads go to the threads (the
// separate-keys form sizes the work by the keys it is given): the same bits as on one thread.
TEST(PhdAttention, DecodingStepGivesTheSameBitsOnTwoThreads) {
  const int K = 4, W = 16, C = 32, heads = 8, hd = 64, len = 300;
  AttentionShape s;
  s.batch = 1;
  s.q_len = K;  // the K copies of position len - 1
  s.n_heads = heads;
  s.head_dim = hd;
  s.q_stride = s.kv_stride = s.o_stride = heads * hd;
  s.scale = 1.0f / std::sqrt((float)hd);
  s.mask = AttentionMask::phd(K, W, C);
  ASSERT_GE((long)heads * K * len * hd, kParallelMinWork)
      << "the case no longer reaches the threaded path";
  const auto ok = random_vector((size_t)len * s.kv_stride, 41),
             ov = random_vector((size_t)len * s.kv_stride, 42);
  const int hidden = W + K;  // the ring of hidden tokens the copies may attend
  const auto hk = random_vector((size_t)hidden * s.kv_stride, 43),
             hv = random_vector((size_t)hidden * s.kv_stride, 44);
  const auto q = random_vector((size_t)K * s.q_stride, 45);
  PhdKeys keys;
  keys.orig_k = ok.data(), keys.orig_v = ov.data(), keys.orig_len = len;
  keys.hid_k = hk.data(), keys.hid_v = hv.data();
  keys.hidden_first = (int64_t)(len - 1) * (K - 1) - W, keys.hidden_len = hidden - 1;
  const int threads = num_threads();
  std::vector<float> o1((size_t)K * s.o_stride), l1((size_t)heads * K), o2 = o1, l2 = l1;
  set_num_threads(1);
  phd_attention_forward(s, PhdQueryRows{len - 1, len - 1}, keys, q.data(), o1.data(), l1.data());
  set_num_threads(2);
  phd_attention_forward(s, PhdQueryRows{len - 1, len - 1}, keys, q.data(), o2.data(), l2.data());
  set_num_threads(threads);
  EXPECT_EQ(std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)), 0);
  for (float x : o1) ASSERT_TRUE(std::isfinite(x));
  // Copy K-1 alone (a last layer's one row): the bits it gets among all K.
  AttentionShape s1 = s;
  s1.q_len = 1;
  std::vector<float> o3(s.o_stride), l3(heads);
  phd_attention_forward(s1, PhdQueryRows{len - 1, len - 1, K - 1}, keys,
                        q.data() + (size_t)(K - 1) * s.q_stride, o3.data(), l3.data());
  EXPECT_EQ(
      std::memcmp(o3.data(), o1.data() + (size_t)(K - 1) * s.o_stride, o3.size() * sizeof(float)),
      0);
  for (int h = 0; h < heads; ++h) EXPECT_EQ(l3[h], l1[(size_t)h * K + K - 1]) << "head " << h;
  EXPECT_THROW(phd_attention_forward(s1, PhdQueryRows{len - 1, len - 1, K}, keys, q.data(),
                                     o3.data(), l3.data()),
               Error);
}

TEST(PhdAttention, RejectsBadMasksAndRows) {
  Case c;
  AttentionShape s = c.shape();
  s.mask.chunk = 0;
  s.mask.kind = AttentionMask::Kind::PhdCswa;
  std::vector<float> q(c.q_size()), k(c.kv_size()), o(c.o_size()), lse(c.lse_size());
  EXPECT_THROW(attention_forward(s, q.data(), k.data(), k.data(), o.data(), lse.data()), Error);
  s = c.shape();
  s.q_len = 3;  // not whole positions of K = 2 copies
  PhdKeys keys;
  keys.orig_k = keys.orig_v = k.data(), keys.orig_len = 5;
  EXPECT_THROW(phd_attention_forward(s, PhdQueryRows{4, 4}, keys, q.data(), o.data(), lse.data()),
               Error);
}

}  // namespace
}  // namespace chainlm
