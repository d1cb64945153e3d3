#pragma once
// The attention passes behind attention.h's entry points (attention.cpp), internal to the
// kernels: how the work is split into items for the threads, and the items of the dense
// passes (attention_dense.cpp) and of the PHD passes over the repeated stream
// (attention_phd.cpp).
//
// Forward items are (sequence b, query head h, chunk): query tiles chunk, chunk + chunks, ...
// of the head. One chunk per head, so its KV rows are packed once, unless that leaves too few
// items for the threads: then each head's query tiles are dealt round-robin (which also
// balances the causal mask's growing per-tile cost). Backward items are (sequence b, KV head
// g) with every query head that reads g, so dk and dv of g have a single writer.
#include <omp.h>

#include <algorithm>

#include "core/threads.h"
#include "kernels/attention.h"
#include "kernels/attention_tiles.h"

namespace chainlm::attn {

// Throws chainlm::Error naming the first field of s that no pass can run.
void check_attention_shape(const AttentionShape& s);

template <typename Item>  // item(b, h, chunk, chunks)
void for_each_forward_item(const AttentionShape& s, const Item& item) {
  const long bh = static_cast<long>(s.batch) * s.n_heads;
  const int q_tiles = (s.q_len + kTile - 1) / kTile;
  if (bh == 0 || q_tiles == 0) return;
  // A decoding step's few query rows over a short cache stay on the calling thread: a parallel
  // region costs more than they do (core/threads.h, worth_parallel).
  const long work = bh * s.q_len * static_cast<long>(s.kv_len) * s.head_dim;
  if (!worth_parallel(work)) {
    for (long i = 0; i < bh; ++i) item(static_cast<int>(i / s.n_heads), static_cast<int>(i % s.n_heads), 0, 1);
    return;
  }
  const long want = 2L * omp_get_max_threads();
  const int chunks = static_cast<int>(std::clamp<long>((want + bh - 1) / bh, 1, q_tiles));
  const long items = bh * chunks;
#pragma omp parallel for schedule(dynamic, 1)
  for (long i = 0; i < items; ++i) {
    const int chunk = static_cast<int>(i / bh);
    const int b = static_cast<int>(i % bh / s.n_heads);
    const int h = static_cast<int>(i % s.n_heads);
    item(b, h, chunk, chunks);
  }
}

// The active query heads grouped by the KV head they read: heads order[start[g]],
// ..., order[start[g+1] - 1] read KV head g < groups. The arrays are the calling thread's and
// stay valid until its next call (no allocation once warm).
struct KvHeadGroups {
  const int* order;
  const int* start;
  int groups;
};
KvHeadGroups group_heads_by_kv_head(const AttentionShape& s);

template <typename Item>  // item(b, g, heads, n_heads_of_g), for groups with heads only
void for_each_backward_item(const AttentionShape& s, const Item& item) {
  const KvHeadGroups kv = group_heads_by_kv_head(s);
  const long items = static_cast<long>(s.batch) * kv.groups;
#pragma omp parallel for schedule(dynamic, 1)
  for (long i = 0; i < items; ++i) {
    const int b = static_cast<int>(i / kv.groups), g = static_cast<int>(i % kv.groups);
    const int nh = kv.start[g + 1] - kv.start[g];
    if (nh > 0) item(b, g, kv.order + kv.start[g], nh);
  }
}

// Up to this many query rows (decoding) take the row-at-a-time path (rows_forward): a 64 x 64
// tile with a handful of query lanes would spend most of its vector lanes on padding.
constexpr int kFewRows = 4;
// Query rows [i0, i0 + nq) of heads [h0, h1) in sequence b, one row at a time, K and V of
// element type T (float, or uint16_t halves widened as they are read).
template <typename T>
void forward_rows(const AttentionShape& s, int b, int h0, int h1, int i0, int nq, const float* q, const T* k,
                  const T* v, float* o, float* lse);
// Every query row of every head (s.q_len <= kFewRows), split over the threads by sequence and
// range of heads.
template <typename T>
void rows_forward(const AttentionShape& s, const float* q, const T* k, const T* v, float* o, float* lse);

// Dense (causal) passes, one work item each.
void dense_forward_item(const AttentionShape& s, int b, int h, int t0, int step, const float* q,
                        const float* k, const float* v, float* o, float* lse);
void dense_backward_item(const AttentionShape& s, int b, int g, const int* heads, int nh,
                         const float* q, const float* k, const float* v, const float* o,
                         const float* lse, const float* dout, float* dq, float* dk, float* dv);

// PHD masks over the repeated stream (training and full-sequence evaluation), all items.
void phd_stream_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        float* o, float* lse);
void phd_stream_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                         const float* o, const float* lse, const float* dout, float* dq, float* dk,
                         float* dv);

}  // namespace chainlm::attn
