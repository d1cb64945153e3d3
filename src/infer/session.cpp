#include "infer/session.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/chain_linear.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace chainlm {

InferenceSession::InferenceSession(const Model& model, int max_chunk)
    : model_(model),
      max_chunk_(std::max(1, std::min(max_chunk, model.config().max_seq_len))),
      cache_(model.config().n_layers, model.config().max_seq_len, model.layout()) {
  const ModelConfig& c = model.config();
  const size_t rows = max_chunk_;
  x_.resize(rows * c.dim);
  xn_.resize(rows * c.dim);
  q_.resize(rows * c.dim);
  att_.resize(rows * c.dim);
  h1_.resize(rows * c.ffn_dim);
  h3_.resize(rows * c.ffn_dim);
  g_.resize(rows * c.ffn_dim);
  rstd_.resize(rows * model.layout().n);
  lse_.resize(rows * c.n_heads);
  logits_.resize(c.vocab_size);
  positions_.resize(rows);
}

void InferenceSession::reset() {
  tokens_.clear();
  std::fill(cache_.filled.begin(), cache_.filled.end(), 0);
}

bool InferenceSession::needs_recompute(int k) const {
  const ChainLayout& L = model_.layout();
  for (int i = 0; i < L.kv_blocks(k); ++i)
    if (cache_.filled[i] < length()) return true;
  return false;
}

const float* InferenceSession::append(const int* tokens, int n, int k, float* all_logits) {
  const ModelConfig& c = model_.config();
  CHAINLM_CHECK(k >= 1 && k <= c.n_chains(), "active chains ", k, " is outside 1..", c.n_chains());
  CHAINLM_CHECK(n >= 1, "nothing to append");
  CHAINLM_CHECK(length() + n <= c.max_seq_len, "the sequence would be ", length() + n,
                " tokens, longer than the model's max_seq_len ", c.max_seq_len);
  for (int i = 0; i < n; ++i)
    CHAINLM_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, "token id ", tokens[i],
                  " is outside the vocabulary (size ", c.vocab_size, ")");
  if (needs_recompute(k)) {
    // Plain CoLM growing its chain count: the new chains' K/V for the prefix need the new
    // chains' hidden states, which depend on every layer below, so the prefix runs again
    // with k chains. (CoLM-Air never gets here: its cache is shared by all sub-models.)
    std::vector<int> history = tokens_;
    reset();
    for (int p = 0; p < (int)history.size(); p += max_chunk_) {
      const int m = std::min<int>(max_chunk_, (int)history.size() - p);
      forward_chunk(history.data() + p, m, k, nullptr);
    }
  }
  for (int p = 0; p < n; p += max_chunk_) {
    const int m = std::min(max_chunk_, n - p);
    forward_chunk(tokens + p, m, k,
                  all_logits ? all_logits + (size_t)p * c.vocab_size : nullptr);
  }
  return logits_.data();
}

const float* InferenceSession::prefill(const std::vector<int>& prompt, int k, bool chain1_prefill) {
  CHAINLM_CHECK(!prompt.empty(), "empty prompt: it needs at least the BOS token");
  const int n = (int)prompt.size();
  if (chain1_prefill && model_.config().kv_share && k > 1 && n > 1)
    append(prompt.data(), n - 1, 1);
  else if (n > 1)
    append(prompt.data(), n - 1, k);
  return append(prompt.data() + n - 1, 1, k);
}

// One forward pass of n new rows at positions [len, len+n) over the cache.
// x, xn, q, att are (n, D); h1, h3, g are (n, F); the new K/V rows go straight into the
// cache, whose rows are (capacity, KV).
void InferenceSession::forward_chunk(const int* tokens, int n, int k, float* all_logits) {
  const ModelConfig& c = model_.config();
  const ChainLayout& L = model_.layout();
  const int D = c.dim, F = c.ffn_dim, V = c.vocab_size, KV = L.kv.total(), hd = L.head_dim;
  const int Dk = L.dim.prefix(k), Fk = L.ffn.prefix(k);
  const int len = length();
  for (int i = 0; i < n; ++i) positions_[i] = len + i;
  const int kv_blocks = L.kv_blocks(k);
  const int kv_heads_active = L.active_kv_width(k) / hd;

  embedding_forward(n, Dk, tokens, model_.embedding(), D, x_.data(), D);
  AttentionShape as;
  as.batch = 1;
  as.q_len = n;
  as.kv_len = len + n;
  as.q_offset = len;
  as.n_heads = L.active_heads(k);
  as.head_dim = hd;
  as.q_stride = D;
  as.kv_stride = KV;
  as.o_stride = D;
  as.kv_head_of = L.kv_head_of.data();
  as.scale = 1.0f / std::sqrt((float)hd);
  auto table = rope_table(hd, c.rope_theta, len + n);

  for (int l = 0; l < c.n_layers; ++l) {
    const Model::LayerIndex& li = model_.layer(l);
    const ParamStore& ps = model_.params();
    float* kc = cache_.k_layer(l);
    float* vc = cache_.v_layer(l);
    rmsnorm_forward(L.dim, k, n, x_.data(), D, ps.value(li.attention_norm), c.norm_eps,
                    xn_.data(), D, rstd_.data());
    chain_linear_forward(L.wq, k, n, xn_.data(), D, li.v_wq.data(), q_.data(), D);
    chain_linear_forward(L.wk, kv_blocks, n, xn_.data(), D, li.v_wk.data(), kc + (size_t)len * KV, KV);
    chain_linear_forward(L.wv, kv_blocks, n, xn_.data(), D, li.v_wv.data(), vc + (size_t)len * KV, KV);
    rope_forward(*table, q_.data(), n, as.n_heads, D, positions_.data());
    rope_forward(*table, kc + (size_t)len * KV, n, kv_heads_active, KV, positions_.data());
    attention_forward(as, q_.data(), kc, vc, att_.data(), lse_.data());
    // The residual stream is updated in place: the GEMM adds onto x (beta = 1).
    chain_linear_forward(L.wo, k, n, att_.data(), D, li.v_wo.data(), x_.data(), D, 1.0f);
    rmsnorm_forward(L.dim, k, n, x_.data(), D, ps.value(li.ffn_norm), c.norm_eps, xn_.data(), D,
                    rstd_.data());
    chain_linear_forward(L.w1, k, n, xn_.data(), D, li.v_w1.data(), h1_.data(), F);
    chain_linear_forward(L.w3, k, n, xn_.data(), D, li.v_w3.data(), h3_.data(), F);
    swiglu_forward(n, Fk, h1_.data(), h3_.data(), g_.data(), F);
    chain_linear_forward(L.w2, k, n, g_.data(), F, li.v_w2.data(), x_.data(), D, 1.0f);
  }
  for (int i = 0; i < kv_blocks; ++i) cache_.filled[i] = len + n;
  tokens_.insert(tokens_.end(), tokens, tokens + n);

  // Only the rows whose logits are wanted go through the final norm and the head.
  const int first = all_logits ? 0 : n - 1;
  const int rows = n - first;
  rmsnorm_forward(L.dim, k, rows, x_.data() + (size_t)first * D, D, model_.final_norm(), c.norm_eps,
                  xn_.data(), D, rstd_.data());
  if (all_logits) {
    gemm_nt(rows, V, Dk, xn_.data(), D, model_.head(), D, all_logits, V, 0.0f);
    std::copy(all_logits + (size_t)(rows - 1) * V, all_logits + (size_t)rows * V, logits_.begin());
  } else {
    gemm_nt(1, V, Dk, xn_.data(), D, model_.head(), D, logits_.data(), V, 0.0f);
  }
}

}  // namespace chainlm
