// Chain-of-Linear over bf16 blocks (a bf16 training step): x and dy are rounded once for all
// blocks. Checked against float64 products of the rounded operands at fp32's rounding tolerance,
// on both bf16 paths (bf16 instructions, and rounded operands on the fp32 kernels), for few rows
// (decoding) and many (training), with frozen leading chains; and the bf16-x overloads give the
// same bits as the fp32-x ones, as do those taking dy in bf16 too.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bf16_path.h"
#include "gradcheck.h"
#include "kernels/bf16.h"
#include "kernels/chain_linear.h"

namespace chainlm {
namespace {

using test::Bf16Path;
using test::random_vector;

double r16(float v) { return from_bf16(to_bf16(v)); }


// |got - want| <= (K + 2) 2^-24 sum|terms|: the fp32 sum of K exact bf16 products plus beta C.
void expect_fp32_close(double got, double want, double magnitude, int K, const char* what) {
  ASSERT_NEAR(got, want, (K + 2) * std::ldexp(1.0, -24) * magnitude * 1.01) << what;
}

struct Blocks {
  ChainLinear cl;
  std::vector<std::vector<float>> w;  // fp32 originals
  std::vector<std::vector<bf16_t>> h;  // their bf16 blocks
  std::vector<WeightRef> refs;
  Blocks(int din, int dout, std::vector<int> chains) : cl{ChainSplit(din, chains), ChainSplit(dout, chains)} {
    for (int i = 0; i < cl.in.n(); ++i) {
      w.push_back(random_vector((size_t)cl.out.width(i) * cl.in.end(i), 50 + i));
      h.emplace_back(w.back().size());
      to_bf16(w.back().data(), h.back().data(), w.back().size());
    }
    for (auto& b : h) refs.push_back(WeightRef{nullptr, b.data()});
  }
  double weight(int i, int o, int j) const { return from_bf16(h[i][(size_t)o * cl.in.end(i) + j]); }
};

TEST(ChainLinearBf16, ForwardIsTheProductOfRoundedOperands) {
  const int din = 24, dout = 36, ldx = 27, ldy = 40;
  Blocks b(din, dout, {1, 2, 1});
  for (bool emulated : {false, true})
    for (int M : {3, 20})
      for (int k : {2, 3}) {
        const Bf16Path path(emulated);
        const auto x = random_vector((size_t)M * ldx, 60 + M);
        const auto y0 = random_vector((size_t)M * ldy, 61);
        for (float beta : {0.0f, 1.0f}) {
          std::vector<float> y = y0;
          chain_linear_forward(b.cl, k, M, x.data(), ldx, b.refs.data(), y.data(), ldy, beta);
          std::vector<bf16_t> xh(x.size());
          to_bf16(x.data(), xh.data(), x.size());
          std::vector<float> y2 = y0;
          chain_linear_forward(b.cl, k, M, xh.data(), ldx, b.refs.data(), y2.data(), ldy, beta);
          for (int r = 0; r < M; ++r)
            for (int i = 0; i < b.cl.out.n(); ++i)
              for (int o = 0; o < b.cl.out.width(i); ++o) {
                const size_t at = (size_t)r * ldy + b.cl.out.begin(i) + o;
                if (i >= k) {
                  ASSERT_EQ(y[at], y0[at]) << "an inactive chain's column was written";
                  continue;
                }
                double want = beta * y0[at], magnitude = std::fabs(want);
                for (int j = 0; j < b.cl.in.end(i); ++j) {
                  const double t = r16(x[(size_t)r * ldx + j]) * b.weight(i, o, j);
                  want += t;
                  magnitude += std::fabs(t);
                }
                expect_fp32_close(y[at], want, magnitude, b.cl.in.end(i), "y");
              }
          if (M > 8) EXPECT_EQ(y, y2) << "bf16-x and fp32-x forward differ, M " << M;
          else for (size_t e = 0; e < y.size(); ++e) ASSERT_NEAR(y[e], y2[e], 1e-4 * (1 + std::fabs(y[e])));
        }
      }
}

TEST(ChainLinearBf16, BackwardIsTheProductOfRoundedOperandsWithFrozenChains) {
  const int din = 24, dout = 36, ldx = 26, ldy = 38, lddx = 25;
  Blocks b(din, dout, {1, 2, 1});
  for (bool emulated : {false, true})
    for (int M : {3, 20})
      for (int first : {0, 1}) {
        const Bf16Path path(emulated);
        const int k = 3;
        const auto x = random_vector((size_t)M * ldx, 70 + M);
        const auto dy = random_vector((size_t)M * ldy, 71);
        const auto dx0 = random_vector((size_t)M * lddx, 72);
        for (bool overwrite : {false, true}) {
          // dx from dx0 and weight gradients from 0.25 (none for frozen blocks), by x in fp32 or
          // already in bf16.
          auto backward_of = [&](const auto* xs, const auto* dys, std::vector<float>& dx,
                                 std::vector<std::vector<float>>& dw) {
            dx = dx0;
            std::vector<float*> dwp;
            for (int i = 0; i < 3; ++i) dw.emplace_back(b.w[i].size(), 0.25f);
            for (int i = 0; i < 3; ++i) dwp.push_back(i < first ? nullptr : dw[i].data());
            chain_linear_backward(b.cl, k, M, xs, ldx, b.refs.data(), dys, ldy, dx.data(), lddx,
                                  dwp.data(), overwrite, first);
          };
          auto backward = [&](const auto* xs, std::vector<float>& dx,
                              std::vector<std::vector<float>>& dw) {
            backward_of(xs, dy.data(), dx, dw);
          };
          std::vector<float> dx;
          std::vector<std::vector<float>> dw;
          backward(x.data(), dx, dw);
          const int dx_from = b.cl.in.prefix(first);
          for (int r = 0; r < M; ++r)
            for (int j = 0; j < din; ++j) {
              const size_t at = (size_t)r * lddx + j;
              if (j < dx_from) {
                ASSERT_EQ(dx[at], dx0[at]) << "a frozen chain's dx column was written";
                continue;
              }
              double want = overwrite ? 0.0 : dx0[at], magnitude = std::fabs(want);
              int terms = 0;
              for (int i = first; i < k; ++i) {
                if (j >= b.cl.in.end(i)) continue;
                for (int o = 0; o < b.cl.out.width(i); ++o) {
                  const double t = r16(dy[(size_t)r * ldy + b.cl.out.begin(i) + o]) * b.weight(i, o, j);
                  want += t;
                  magnitude += std::fabs(t);
                  ++terms;
                }
              }
              expect_fp32_close(dx[at], want, magnitude, terms, "dx");
            }
          for (int i = 0; i < 3; ++i)
            for (int o = 0; o < b.cl.out.width(i); ++o)
              for (int j = 0; j < b.cl.in.end(i); ++j) {
                const float got = dw[i][(size_t)o * b.cl.in.end(i) + j];
                if (i < first) {
                  ASSERT_EQ(got, 0.25f);
                  continue;
                }
                double want = 0.25, magnitude = 0.25;
                for (int r = 0; r < M; ++r) {
                  const double t = r16(dy[(size_t)r * ldy + b.cl.out.begin(i) + o]) * r16(x[(size_t)r * ldx + j]);
                  want += t;
                  magnitude += std::fabs(t);
                }
                expect_fp32_close(got, want, magnitude, M, "dw");
              }
          // The bf16-x overload: the same bits.
          std::vector<bf16_t> xh(x.size());
          to_bf16(x.data(), xh.data(), x.size());
          std::vector<float> dx2;
          std::vector<std::vector<float>> dw2;
          backward(xh.data(), dx2, dw2);
          EXPECT_EQ(dx, dx2);
          EXPECT_EQ(dw, dw2);
          // And with dy already in bf16 too (SwiGLU's backward writes it so); its frozen
          // chains' columns hold NaN, which must not be read.
          std::vector<bf16_t> dyh(dy.size());
          to_bf16(dy.data(), dyh.data(), dy.size());
          for (int r = 0; r < M; ++r)
            for (int j = 0; j < b.cl.out.prefix(first); ++j) dyh[(size_t)r * ldy + j] = 0x7fc0;
          std::vector<float> dx3;
          std::vector<std::vector<float>> dw3;
          backward_of(xh.data(), dyh.data(), dx3, dw3);
          EXPECT_EQ(dx, dx3);
          EXPECT_EQ(dw, dw3);
        }
      }
}

}  // namespace
}  // namespace chainlm
