// Masked multi-head attention with grouped KV heads, forward and backward, flash-style: the
// entry points of attention.h. They check the shape, split the work into items for the threads
// and run the passes (attention_passes.h):
//
// q, dq are (B, Tq, q_stride); k, v, dk, dv are (B, Tk, kv_stride); o, dout are (B, Tq, o_stride);
// lse is (B, H, Tq). Query head h of a row is the hd floats at h*hd; it reads KV head
// g = kv_head_of[h] of the key rows (floats at g*hd). Query row i sits at position
// q_offset + i, key row j at position j; the mask rules on these positions.
//
// Both passes walk 64 x 64 tiles of the (query, key) plane and never keep a score matrix.
// Where the files are:
//   attention_mask.cpp   the mask rules (AttentionMask: allowed, cover, bounds, bits)
//   attention_tiles.cpp  tile primitives: packing, register-blocked tile matmul (AVX-512, with
//                        a portable fallback), the online-softmax updates of one tile
//   attention_rows.cpp   the same for a few query rows (decoding)
//   attention_steps.cpp  one key tile of the forward, one tile pair of the backward, and the
//                        per-head set-up and write-back both kinds of pass share
//   attention_dense.cpp  the causal passes over (query, key) tiles
//   attention_phd.cpp    the PHD masks (SPEC B2) on compact views of originals and hidden tokens
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/thread_scratch.h"
#include "core/threads.h"
#include "kernels/attention_passes.h"
#include "kernels/bf16_dot_rate.h"
#include "kernels/fp16_rows.h"

namespace chainlm {

namespace attn {

void check_attention_shape(const AttentionShape& s) {
  CHAINLM_CHECK(s.batch >= 0 && s.q_len >= 0 && s.kv_len >= 0 && s.n_heads >= 0,
                "attention: negative batch (", s.batch, "), q_len (", s.q_len, "), kv_len (",
                s.kv_len, ") or n_heads (", s.n_heads, ")");
  CHAINLM_CHECK(s.head_dim > 0, "attention: head_dim must be positive, got ", s.head_dim);
  CHAINLM_CHECK(s.q_offset >= 0, "attention: q_offset must be >= 0, got ", s.q_offset);
  CHAINLM_CHECK(s.scale > 0.0f && std::isfinite(s.scale),
                "attention: scale must be positive and finite, got ", s.scale);
  const long width = static_cast<long>(s.n_heads) * s.head_dim;
  CHAINLM_CHECK(s.q_stride >= width && s.o_stride >= width, "attention: q_stride (", s.q_stride,
                ") and o_stride (", s.o_stride, ") must be >= n_heads*head_dim = ", width);
  if (s.mask.is_phd())
    CHAINLM_CHECK(s.mask.repeat >= 2 && s.mask.window >= 0 &&
                      (s.mask.kind != AttentionMask::Kind::PhdCswa || s.mask.chunk > 0),
                  "attention: a PHD mask needs repeat >= 2, window >= 0 and (CSWA) chunk > 0; got ",
                  s.mask.repeat, ", ", s.mask.window, ", ", s.mask.chunk);
  for (int h = 0; h < s.n_heads; ++h) {
    const int g = kv_head(s, h);
    CHAINLM_CHECK(g >= 0 && static_cast<long>(g + 1) * s.head_dim <= s.kv_stride,
                  "attention: query head ", h, " maps to KV head ", g,
                  ", outside rows of kv_stride ", s.kv_stride, " (head_dim ", s.head_dim, ")");
  }
}

KvHeadGroups group_heads_by_kv_head(const AttentionShape& s) {
  thread_local std::vector<int> order, start, fill;
  int groups = 0;
  for (int h = 0; h < s.n_heads; ++h) groups = std::max(groups, kv_head(s, h) + 1);
  start.assign(groups + 1, 0);
  for (int h = 0; h < s.n_heads; ++h) ++start[kv_head(s, h) + 1];
  for (int g = 0; g < groups; ++g) start[g + 1] += start[g];
  order.resize(s.n_heads);
  fill.assign(start.begin(), start.end() - 1);
  for (int h = 0; h < s.n_heads; ++h) order[fill[kv_head(s, h)]++] = h;
  return KvHeadGroups{order.data(), start.data(), groups};
}

}  // namespace attn

bool attention_has_bf16_products() {
#if CHAINLM_ATTENTION_BF16
  return true;
#else
  return false;
#endif
}

bool attention_runs_bf16_products() {
  return attention_has_bf16_products() && bf16_dot_outruns_fma(bf16_dot_flops_ratio());
}

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* o, float* lse) {
  attn::check_attention_shape(s);
  if (s.mask.is_phd()) {
    attn::phd_stream_forward(s, q, k, v, o, lse);
    return;
  }
  if (s.q_len <= attn::kFewRows) {
    attn::rows_forward(s, q, k, v, o, lse);
    return;
  }
  attn::for_each_forward_item(s, [&](int b, int h, int chunk, int chunks) {
    attn::dense_forward_item(s, b, h, chunk, chunks, q, k, v, o, lse);
  });
}

void attention_forward_f16(const AttentionShape& s, const float* q, const uint16_t* k, const uint16_t* v,
                           float* o, float* lse) {
  attn::check_attention_shape(s);
  CHAINLM_CHECK(!s.mask.is_phd(), "attention: a 16-bit KV cache takes the causal mask only, not a PHD mask");
  if (s.q_len <= attn::kFewRows) {
    attn::rows_forward(s, q, k, v, o, lse);
    return;
  }
  // Many query rows (a prefill chunk): widening the key rows once costs little beside the
  // tiles' work on them, which then runs unchanged. Only the columns of the KV heads read.
  int cols = 0;
  for (int h = 0; h < s.n_heads; ++h) cols = std::max(cols, (attn::kv_head(s, h) + 1) * s.head_dim);
  const long rows = static_cast<long>(s.batch) * s.kv_len;
  struct WidenedKv {};
  float* kf = thread_scratch<float, WidenedKv>(0, 2 * rows * cols);
  float* vf = kf + rows * cols;
  parallel_for(rows, rows * cols, [&](long r) {
    floats_from_fp16(k + r * s.kv_stride, kf + r * cols, cols);
    floats_from_fp16(v + r * s.kv_stride, vf + r * cols, cols);
  });
  AttentionShape widened = s;
  widened.kv_stride = cols;
  attention_forward(widened, q, kf, vf, o, lse);
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv) {
  attn::check_attention_shape(s);
  if (s.batch == 0 || s.q_len == 0 || s.kv_len == 0 || s.n_heads == 0) return;
  if (s.mask.is_phd()) {
    attn::phd_stream_backward(s, q, k, v, o, lse, dout, dq, dk, dv);
    return;
  }
  attn::for_each_backward_item(s, [&](int b, int g, const int* heads, int nh) {
    attn::dense_backward_item(s, b, g, heads, nh, q, k, v, o, lse, dout, dq, dk, dv);
  });
}

}  // namespace chainlm
