#pragma once
// Masked multi-head attention with grouped KV heads, flash-style (tiled online softmax).
//
// q is (B, Tq, q_stride): head h of query row i starts at q[(b*Tq + i)*q_stride + h*hd]
// k, v are (B, Tk, kv_stride): KV head g of key row j starts at k[(b*Tk + j)*kv_stride + g*hd]
// o is (B, Tq, o_stride), laid out like q; dout too.
// lse is (B, n_heads, Tq): log-sum-exp of the scaled, masked scores of each query row
//   (natural log; -inf for a row that may attend nothing, whose output is 0).
// o[b,i,h] = sum_j softmax_j(scale * q[b,i,h] . k[b,j,g]) v[b,j,g], g = kv_head_of[h],
//   over the keys j the mask allows for query i.
// Nothing of size Tq x Tk is ever stored: the backward recomputes scores from q, k and lse.
// Tiles of the (query, key) plane that the mask excludes entirely are skipped.
#include <cstdint>

#include "kernels/attention_mask.h"

namespace chainlm {

struct AttentionShape {
  int batch = 1;     // B
  int q_len = 0;     // Tq query rows per sequence
  int kv_len = 0;    // Tk key rows per sequence
  int q_offset = 0;  // position of query row 0: training q_offset=0, q_len=kv_len; decoding
                     // with a cache q_len=1 (or a few), q_offset=kv_len-q_len.
  int n_heads = 0;   // active query heads, a prefix of the heads a row holds (elastic
                     // sub-models use the first heads only)
  int head_dim = 0;
  int q_stride = 0;   // floats between consecutive rows of q (and dq)
  int kv_stride = 0;  // floats between consecutive rows of k, v (and dk, dv)
  int o_stride = 0;   // floats between consecutive rows of o (and dout)
  // kv_head_of[h] = KV head of query head h (GQA, CoLM-Air); nullptr means kv head h.
  const int* kv_head_of = nullptr;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
  AttentionMask mask;
  // The tile products of the full passes (training, evaluation) with bf16 operands and fp32
  // accumulation, on CPUs with AVX512-BF16 (elsewhere they stay fp32): bf16 training and
  // evaluation (docs/precision.md). Softmax statistics, lse and the outputs stay fp32; the
  // few-row decoding paths ignore it.
  bool bf16_products = false;
};

// Forward: writes o (the first n_heads*hd floats of each row) and lse.
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* o, float* lse);

// The same with K and V stored as IEEE halves (a 16-bit KV cache, infer/kv_cache.h; kv_stride
// counts halves), for the causal mask (no PHD mask). Up to 4 query rows (decoding) read the
// halves in place; more rows first widen the key rows they read into fp32 scratch. Either
// way the result is attention_forward's on the widened rows, bit for bit.
void attention_forward_f16(const AttentionShape& s, const float* q, const uint16_t* k, const uint16_t* v,
                           float* o, float* lse);

// PHD attention over separately stored originals and hidden tokens (incremental inference,
// SPEC B3). The query rows are: the originals of positions [first_position, hidden_from), one
// row each, then all `repeat` copies of positions [hidden_from, ...), copy by copy. Keys:
// the original of position m is row m of orig_k/orig_v (m < orig_len); hidden-stream token h
// (h = p*(K-1) + c-1 for copy c >= 1 of position p) is row h - hidden_first of hid_k/hid_v
// (hidden_first <= h < hidden_first + hidden_len); hidden tokens outside are not attended. Rows
// are s.kv_stride floats apart. s.mask (a PHD kind) gives K, W, C; s.batch must be 1; s.q_len
// is the number of query rows; s.kv_len and s.q_offset are unused. With copy_from > 0 a
// position past hidden_from brings only its copies copy_from..K-1 (a last layer, whose other
// rows nobody reads, passes K-1: one row per position). Each row's result is what it gets
// among all K (bit for bit when both calls have at most 8 rows, as a decoding step).
struct PhdQueryRows {
  int64_t first_position = 0;
  int64_t hidden_from = 0;
  int64_t copy_from = 0;
};
struct PhdKeys {
  const float* orig_k = nullptr;
  const float* orig_v = nullptr;
  int64_t orig_len = 0;
  const float* hid_k = nullptr;
  const float* hid_v = nullptr;
  int64_t hidden_first = 0;
  int64_t hidden_len = 0;
};
void phd_attention_forward(const AttentionShape& s, const PhdQueryRows& rows, const PhdKeys& keys,
                           const float* q, float* o, float* lse);

// Whether this build runs AttentionShape::bf16_products on bf16 operands (AVX512-BF16); without
// them the flag changes nothing.
bool attention_has_bf16_products();
// Whether a bf16 run's attention asks for them (the model sets bf16_products by it): where the
// build has them and this CPU's bf16 dot product outruns its FMA (bf16_dot_rate.h). On Intel's
// Sapphire and Emerald Rapids without AMX it runs at half the FMA's rate, and fp32 tiles win.
bool attention_runs_bf16_products();

// Backward: dq (laid out like q), dk, dv (like k, v) are accumulated into (+=); only the
// active heads' and used KV heads' blocks are touched. Needs o and lse from the forward.
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv);

}  // namespace chainlm
