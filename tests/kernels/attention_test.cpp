#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "attention_reference.h"
#include "gradcheck.h"

namespace chainlm {
namespace {

using test::causal;
using test::expect_close;
using test::kv_of;
using test::reference_forward;
using test::random_vector;

// A test case: the shape plus the buffers' sizes. Strides default to tight packing of
// `q_heads_held` query heads and `kv_heads_held` KV heads.
struct Case {
  int batch = 1, q_len = 1, kv_len = 1, q_offset = 0;
  int n_heads = 1, head_dim = 16;
  int q_heads_held = 0, kv_heads_held = 1;  // 0: n_heads
  std::vector<int> kv_map;                  // empty: identity

  AttentionShape shape() const {
    AttentionShape s;
    s.batch = batch;
    s.q_len = q_len;
    s.kv_len = kv_len;
    s.q_offset = q_offset;
    s.n_heads = n_heads;
    s.head_dim = head_dim;
    const int qh = q_heads_held ? q_heads_held : n_heads;
    s.q_stride = qh * head_dim;
    s.o_stride = qh * head_dim + 3;  // deliberately different from q_stride
    s.kv_stride = kv_heads_held * head_dim;
    s.kv_head_of = kv_map.empty() ? nullptr : kv_map.data();
    s.scale = 1.0f / std::sqrt((float)head_dim);
    return s;
  }
  size_t q_size() const { return (size_t)batch * q_len * shape().q_stride; }
  size_t o_size() const { return (size_t)batch * q_len * shape().o_stride; }
  size_t kv_size() const { return (size_t)batch * kv_len * shape().kv_stride; }
  size_t lse_size() const { return (size_t)batch * n_heads * q_len; }
};

// Naive analytic backward in double (gradients only, not accumulated).
void reference_backward(const AttentionShape& s, const std::vector<float>& q,
                        const std::vector<float>& k, const std::vector<float>& v,
                        const std::vector<float>& dout, std::vector<double>& dq,
                        std::vector<double>& dk, std::vector<double>& dv) {
  const int hd = s.head_dim;
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  std::vector<double> p(s.kv_len), dp(s.kv_len);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.n_heads; ++h)
      for (int i = 0; i < s.q_len; ++i) {
        const size_t qa = ((size_t)b * s.q_len + i) * s.q_stride + (size_t)h * hd;
        const size_t oa = ((size_t)b * s.q_len + i) * s.o_stride + (size_t)h * hd;
        auto key = [&](int j) {
          return ((size_t)b * s.kv_len + j) * s.kv_stride + (size_t)kv_of(s, h) * hd;
        };
        double m = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < s.kv_len; ++j) {
          if (!causal(s, i, j)) continue;
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += (double)q[qa + d] * k[key(j) + d];
          p[j] = dot * s.scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < s.kv_len; ++j)
          if (causal(s, i, j)) sum += (p[j] = std::exp(p[j] - m));
        double D = 0;
        for (int j = 0; j < s.kv_len; ++j) {
          if (!causal(s, i, j)) continue;
          p[j] /= sum;
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += (double)dout[oa + d] * v[key(j) + d];
          dp[j] = dot;
          D += p[j] * dp[j];
          for (int d = 0; d < hd; ++d) dv[key(j) + d] += p[j] * dout[oa + d];
        }
        for (int j = 0; j < s.kv_len; ++j) {
          if (!causal(s, i, j)) continue;
          const double ds = p[j] * (dp[j] - D) * s.scale;
          for (int d = 0; d < hd; ++d) {
            dq[qa + d] += ds * k[key(j) + d];
            dk[key(j) + d] += ds * q[qa + d];
          }
        }
      }
}

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs make_inputs(const Case& c, uint64_t seed, float q_scale = 1.0f) {
  return {random_vector(c.q_size(), seed, q_scale), random_vector(c.kv_size(), seed + 1),
          random_vector(c.kv_size(), seed + 2)};
}

// Runs the kernel forward and checks o (active heads only; the rest must be untouched)
// and lse against the double reference.
void check_forward(const Case& c, uint64_t seed, float q_scale = 1.0f, double atol = 1e-5) {
  SCOPED_TRACE(::testing::Message()
               << "B " << c.batch << " Tq " << c.q_len << " Tk " << c.kv_len << " off "
               << c.q_offset << " H " << c.n_heads << " hd " << c.head_dim);
  const AttentionShape s = c.shape();
  Inputs in = make_inputs(c, seed, q_scale);
  const float sentinel = 12345.0f;
  std::vector<float> o(c.o_size(), sentinel), lse(c.lse_size(), sentinel);
  attention_forward(s, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
  std::vector<double> ro, rlse;
  reference_forward(s, in.q, in.k, in.v, ro, rlse);
  const int width = c.n_heads * c.head_dim;
  for (size_t r = 0; r < (size_t)c.batch * c.q_len; ++r)
    for (int col = width; col < s.o_stride; ++col) {
      ASSERT_EQ(o[r * s.o_stride + col], sentinel) << "o written outside the active heads";
      ro[r * s.o_stride + col] = sentinel;
    }
  expect_close(o, ro, o.size(), atol, 1e-4, "o");
  expect_close(lse, rlse, lse.size(), 1e-5, 1e-5, "lse");
}

std::vector<int> grouped(int n_heads, int n_kv) {
  std::vector<int> m(n_heads);
  for (int h = 0; h < n_heads; ++h) m[h] = h / (n_heads / n_kv);
  return m;
}

TEST(Attention, ForwardMhaMatchesReference) {
  for (int T : {1, 7, 64, 65, 130}) {
    Case c;
    c.batch = 2, c.q_len = c.kv_len = T, c.n_heads = 3, c.head_dim = 64, c.kv_heads_held = 3;
    check_forward(c, 100 + T);
  }
}

TEST(Attention, ForwardGqaMatchesReference) {
  for (int T : {7, 130}) {
    Case c;
    c.batch = 2, c.q_len = c.kv_len = T, c.n_heads = 8, c.head_dim = 32, c.kv_heads_held = 2;
    c.kv_map = grouped(8, 2);
    check_forward(c, 200 + T);
  }
}

TEST(Attention, ForwardColmAirMappingMatchesReference) {
  Case c;
  c.batch = 2, c.q_len = c.kv_len = 130, c.n_heads = 8, c.head_dim = 64, c.kv_heads_held = 2;
  c.kv_map = {0, 1, 0, 1, 0, 0, 1, 1};
  check_forward(c, 300);
}

TEST(Attention, ForwardFewerActiveHeadsThanHeld) {
  // An elastic sub-model: 2 of 6 held query heads, reading KV heads 1 and 2 of 3 held.
  Case c;
  c.batch = 3, c.q_len = c.kv_len = 65, c.n_heads = 2, c.head_dim = 64;
  c.q_heads_held = 6, c.kv_heads_held = 3, c.kv_map = {2, 1};
  check_forward(c, 400);
}

TEST(Attention, ForwardSingleSequenceSingleHead) {
  // Few (sequence, head) pairs: query tiles are dealt to threads round-robin, and a last
  // tile of <= 4 rows takes the row-at-a-time path.
  for (int T : {66, 130, 260}) {
    Case c;
    c.batch = 1, c.q_len = c.kv_len = T, c.n_heads = 1, c.head_dim = 64, c.kv_heads_held = 1;
    check_forward(c, 450 + T);
  }
}

TEST(Attention, ForwardOddHeadDims) {
  for (int hd : {8, 24, 80, 128}) {
    Case c;
    c.batch = 1, c.q_len = c.kv_len = 70, c.n_heads = 2, c.head_dim = hd, c.kv_heads_held = 2;
    check_forward(c, 500 + hd);
  }
}

TEST(Attention, ForwardLargeLogitsStayStable) {
  Case c;
  c.batch = 1, c.q_len = c.kv_len = 200, c.n_heads = 2, c.head_dim = 64, c.kv_heads_held = 2;
  // Logits of std ~30: exp overflows without max-shifting. Float rounding of the scores is
  // amplified 30x too, hence the looser absolute tolerance.
  check_forward(c, 600, 30.0f, 1e-4);
}

TEST(Attention, ForwardWithQueryOffset) {
  for (int Tq : {1, 3, 64, 70}) {
    Case c;
    c.batch = 2, c.q_len = Tq, c.kv_len = 150, c.q_offset = 150 - Tq, c.n_heads = 4;
    c.head_dim = 32, c.kv_heads_held = 2, c.kv_map = grouped(4, 2);
    check_forward(c, 700 + Tq);
  }
  // A query block in the middle of the keys: later keys must be ignored.
  Case c;
  c.batch = 1, c.q_len = 20, c.kv_len = 150, c.q_offset = 50, c.n_heads = 2, c.head_dim = 16;
  c.kv_heads_held = 2;
  check_forward(c, 777);
}

TEST(Attention, DecodeRowsWithHeadsSharingKvHeadsMatchReference) {
  // The few-row path takes consecutive query heads of one KV head through each key block
  // together, at most four at a time: groups of 6 (4 + 2), 3, 1, a CoLM-Air mapping whose runs
  // are 1-2 heads long, head sizes with their own unrolled loops (64, 128) and not (80), key
  // counts across 64-key blocks with odd tails.
  struct Shape {
    int n_heads, n_kv, head_dim;
    std::vector<int> map;
  };
  const std::vector<Shape> shapes = {{12, 2, 64, grouped(12, 2)},
                                     {6, 2, 128, grouped(6, 2)},
                                     {3, 3, 80, {}},
                                     {8, 2, 64, {0, 1, 0, 1, 0, 0, 1, 1}},
                                     {4, 1, 80, grouped(4, 1)}};
  uint64_t seed = 800;
  for (const Shape& sh : shapes)
    for (int Tq : {1, 4})
      for (int Tk : {Tq, 67, 150}) {
        Case c;
        c.batch = 2, c.q_len = Tq, c.kv_len = Tk, c.q_offset = Tk - Tq, c.n_heads = sh.n_heads;
        c.head_dim = sh.head_dim, c.kv_heads_held = sh.n_kv, c.kv_map = sh.map;
        check_forward(c, seed++);
      }
}

TEST(Attention, DecodeRowsEqualTheFullPass) {
  // The last m rows of a causal pass over T tokens equal a pass of m query rows at
  // q_offset = T - m over the same keys (a KV cache).
  const int T = 131, B = 2, H = 4, hd = 64;
  Case full;
  full.batch = B, full.q_len = full.kv_len = T, full.n_heads = H, full.head_dim = hd;
  full.kv_heads_held = 2, full.kv_map = grouped(H, 2);
  const AttentionShape fs = full.shape();
  Inputs in = make_inputs(full, 800);
  std::vector<float> o(full.o_size()), lse(full.lse_size());
  attention_forward(fs, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
  for (int m : {1, 2, 67}) {
    AttentionShape ds = fs;
    ds.q_len = m, ds.q_offset = T - m;
    std::vector<float> q((size_t)B * m * fs.q_stride), od((size_t)B * m * fs.o_stride);
    std::vector<float> lsed((size_t)B * H * m);
    for (int b = 0; b < B; ++b)
      std::copy_n(in.q.begin() + ((size_t)b * T + T - m) * fs.q_stride, (size_t)m * fs.q_stride,
                  q.begin() + (size_t)b * m * fs.q_stride);
    attention_forward(ds, q.data(), in.k.data(), in.v.data(), od.data(), lsed.data());
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < m; ++i) {
        for (int c = 0; c < H * hd; ++c)
          ASSERT_NEAR(od[((size_t)b * m + i) * fs.o_stride + c],
                      o[((size_t)b * T + T - m + i) * fs.o_stride + c], 2e-6)
              << "m " << m << " b " << b << " i " << i;
        for (int h = 0; h < H; ++h)
          ASSERT_NEAR(lsed[((size_t)b * H + h) * m + i], lse[((size_t)b * H + h) * T + T - m + i],
                      2e-6);
      }
  }
}

// Backward helpers -------------------------------------------------------------------

struct Grads {
  std::vector<float> dq, dk, dv;
};

Grads run_backward(const Case& c, const Inputs& in, const std::vector<float>& dout,
                   const Grads* prefill = nullptr) {
  const AttentionShape s = c.shape();
  std::vector<float> o(c.o_size()), lse(c.lse_size());
  attention_forward(s, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
  Grads g = prefill ? *prefill
                    : Grads{std::vector<float>(c.q_size()), std::vector<float>(c.kv_size()),
                            std::vector<float>(c.kv_size())};
  attention_backward(s, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(), dout.data(),
                     g.dq.data(), g.dk.data(), g.dv.data());
  return g;
}

// Tolerance relative to the largest gradient entry: float accumulation of many terms.
void expect_grad_close(const std::vector<float>& got, const std::vector<double>& want, double rel,
                       const char* what) {
  double scale = 1e-12;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  expect_close(got, want, got.size(), rel * scale, rel, what);
}

void check_backward_fd(const Case& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "B " << c.batch << " Tq " << c.q_len << " Tk " << c.kv_len << " off "
               << c.q_offset << " H " << c.n_heads << " hd " << c.head_dim);
  const AttentionShape s = c.shape();
  Inputs in = make_inputs(c, seed, 2.0f);
  auto w = random_vector(c.o_size(), seed + 3);
  // Scalar loss sum(o * w) over the active heads, through the double reference.
  auto loss = [&](const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v) {
    std::vector<double> o, lse;
    reference_forward(s, q, k, v, o, lse);
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += o[i] * w[i];
    return l;
  };
  const auto qd = test::to_double(in.q), kd = test::to_double(in.k), vd = test::to_double(in.v);
  auto nq = test::numeric_grad([&](const std::vector<double>& x) { return loss(x, kd, vd); }, qd);
  auto nk = test::numeric_grad([&](const std::vector<double>& x) { return loss(qd, x, vd); }, kd);
  auto nv = test::numeric_grad([&](const std::vector<double>& x) { return loss(qd, kd, x); }, vd);
  // dout = w restricted to the active heads (the loss ignores the other columns anyway).
  Grads g = run_backward(c, in, w);
  expect_grad_close(g.dq, nq, 1e-4, "dq");
  expect_grad_close(g.dk, nk, 1e-4, "dk");
  expect_grad_close(g.dv, nv, 1e-4, "dv");
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  {
    Case c;  // MHA, a single key tile, T not a multiple of anything
    c.batch = 2, c.q_len = c.kv_len = 7, c.n_heads = 2, c.head_dim = 8, c.kv_heads_held = 2;
    check_backward_fd(c, 1000);
  }
  {
    Case c;  // CoLM-Air mapping, 2 tiles; one KV head held but unused must get no gradient
    c.batch = 1, c.q_len = c.kv_len = 67, c.n_heads = 4, c.head_dim = 4, c.kv_heads_held = 3;
    c.kv_map = {0, 2, 0, 0};
    check_backward_fd(c, 1100);
  }
  {
    Case c;  // decode-style: few query rows at an offset, fewer active heads than held
    c.batch = 2, c.q_len = 3, c.kv_len = 70, c.q_offset = 67, c.n_heads = 2, c.head_dim = 8;
    c.q_heads_held = 3, c.kv_heads_held = 1, c.kv_map = {0, 0};
    check_backward_fd(c, 1200);
  }
}

TEST(Attention, BackwardMatchesAnalyticReference) {
  std::vector<Case> cases;
  {
    Case c;
    c.batch = 2, c.q_len = c.kv_len = 130, c.n_heads = 8, c.head_dim = 64, c.kv_heads_held = 2;
    c.kv_map = {0, 1, 0, 1, 0, 0, 1, 1};
    cases.push_back(c);
  }
  {
    Case c;
    c.batch = 1, c.q_len = c.kv_len = 200, c.n_heads = 4, c.head_dim = 80, c.kv_heads_held = 4;
    cases.push_back(c);
  }
  {
    Case c;
    c.batch = 2, c.q_len = 70, c.kv_len = 190, c.q_offset = 100, c.n_heads = 4, c.head_dim = 32;
    c.q_heads_held = 5, c.kv_heads_held = 2, c.kv_map = grouped(4, 2);
    cases.push_back(c);
  }
  uint64_t seed = 2000;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "Tq " << c.q_len << " Tk " << c.kv_len << " hd " << c.head_dim);
    Inputs in = make_inputs(c, seed, 2.0f);
    auto dout = random_vector(c.o_size(), seed + 5);
    Grads g = run_backward(c, in, dout);
    std::vector<double> dq, dk, dv;
    reference_backward(c.shape(), in.q, in.k, in.v, dout, dq, dk, dv);
    expect_grad_close(g.dq, dq, 1e-4, "dq");
    expect_grad_close(g.dk, dk, 1e-4, "dk");
    expect_grad_close(g.dv, dv, 1e-4, "dv");
    seed += 10;
  }
}

TEST(Attention, BackwardAccumulatesIntoGradients) {
  Case c;
  c.batch = 2, c.q_len = c.kv_len = 100, c.n_heads = 4, c.head_dim = 32, c.kv_heads_held = 2;
  c.kv_map = grouped(4, 2);
  Inputs in = make_inputs(c, 3000);
  auto dout = random_vector(c.o_size(), 3001);
  Grads fresh = run_backward(c, in, dout);
  Grads pre{random_vector(c.q_size(), 3002), random_vector(c.kv_size(), 3003),
            random_vector(c.kv_size(), 3004)};
  Grads acc = run_backward(c, in, dout, &pre);
  for (auto [got, base, delta] :
       {std::tuple{&acc.dq, &pre.dq, &fresh.dq}, std::tuple{&acc.dk, &pre.dk, &fresh.dk},
        std::tuple{&acc.dv, &pre.dv, &fresh.dv}}) {
    for (size_t i = 0; i < got->size(); ++i)
      ASSERT_NEAR((*got)[i], (*base)[i] + (*delta)[i], 1e-5f * (1 + std::fabs((*delta)[i])));
  }
}

TEST(Attention, RejectsBadShapes) {
  Case c;
  c.q_len = c.kv_len = 4, c.n_heads = 2, c.head_dim = 8, c.kv_heads_held = 1;
  c.kv_map = {0, 1};  // KV head 1 does not fit in kv_stride
  AttentionShape s = c.shape();
  std::vector<float> q(c.q_size()), k(c.kv_size()), o(c.o_size()), lse(c.lse_size());
  EXPECT_THROW(attention_forward(s, q.data(), k.data(), k.data(), o.data(), lse.data()), Error);
  c.kv_map = {0, 0};
  s = c.shape();
  s.scale = 0.0f;
  EXPECT_THROW(attention_forward(s, q.data(), k.data(), k.data(), o.data(), lse.data()), Error);
  s = c.shape();
  s.q_stride = 8;
  EXPECT_THROW(attention_forward(s, q.data(), k.data(), k.data(), o.data(), lse.data()), Error);
}

TEST(AttentionMask, CausalRules) {
  AttentionMask m;
  EXPECT_TRUE(m.allowed(5, 5));
  EXPECT_FALSE(m.allowed(5, 6));
  EXPECT_EQ(m.cover(64, 128, 0, 64), AttentionMask::Cover::Full);
  EXPECT_EQ(m.cover(64, 128, 64, 128), AttentionMask::Cover::Partial);
  EXPECT_EQ(m.cover(64, 128, 128, 192), AttentionMask::Cover::Empty);
  // Bit rows agree with allowed() everywhere, including offsets that cross the tile.
  for (int64_t q0 : {0, 5, 64, 100})
    for (int64_t k0 : {0, 30, 64, 130})
      for (int n : {1, 17, 64}) {
        for (int i = 0; i < n; ++i) {
          const uint64_t kb = m.key_bits(q0 + i, k0, n), qb = m.query_bits(k0 + i, q0, n);
          for (int j = 0; j < n; ++j) {
            ASSERT_EQ((kb >> j) & 1, m.allowed(q0 + i, k0 + j) ? 1u : 0u);
            ASSERT_EQ((qb >> j) & 1, m.allowed(q0 + j, k0 + i) ? 1u : 0u);
          }
        }
      }
}

}  // namespace
}  // namespace chainlm
