#include "infer/batch_decode.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/chain_linear.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace chainlm {

namespace {

// Rows [first, first + count) of a pass all run sub-model k.
struct Group {
  int k, first, count;
};

std::vector<Group> groups_of(const DecodeRow* rows, int n) {
  std::vector<Group> g;
  for (int r = 0; r < n; ++r) {
    if (g.empty() || g.back().k != rows[r].chains) g.push_back({rows[r].chains, r, 0});
    ++g.back().count;
  }
  return g;
}

// The Chain-of-Linear forward over rows of several sub-models: output block i for the rows
// whose sub-model has more than i blocks (blocks_of(row)), a prefix of the rows.
template <typename BlocksOf>
void chain_linear_rows(const ChainLinear& cl, int n, BlocksOf blocks_of, const float* x, int ldx,
                       const WeightRef* w, float* y, int ldy, float beta = 0.0f) {
  for (int i = 0; i < cl.out.n(); ++i) {
    int rows = 0;
    while (rows < n && blocks_of(rows) > i) ++rows;
    if (rows == 0) break;
    const int in_w = cl.in.end(i);
    gemm_nt(rows, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta);
  }
}

}  // namespace

BatchDecoder::BatchDecoder(const Model& model) : model_(model) {
  const ModelConfig& c = model.config();
  const size_t R = kMaxDecodeRows, D = c.dim, F = c.ffn_dim, KV = model.layout().kv.total();
  for (auto* v : {&x_, &xn_, &q_, &att_}) v->resize(R * D);
  for (auto* v : {&h1_, &h3_, &g_}) v->resize(R * F);
  k_new_.resize(R * KV);
  v_new_.resize(R * KV);
  rstd_.resize(R * model.layout().n);
  lse_.resize(R * c.n_heads);
  logits_.resize(R * c.vocab_size);
  tokens_.resize(R);
  positions_.resize(R);
}

std::vector<const float*> BatchDecoder::step(const std::vector<DecodeRow>& rows) {
  const ModelConfig& c = model_.config();
  std::vector<const float*> out(rows.size(), nullptr);
  std::vector<int> batched;  // indices of rows that share passes
  for (size_t r = 0; r < rows.size(); ++r) {
    InferenceSession& s = *rows[r].session;
    CHAINLM_CHECK(&s.model_ == &model_, "a decoding row's session belongs to another model");
    if (c.phd.enabled() || s.needs_recompute(rows[r].chains)) {
      out[r] = s.decode(rows[r].token, rows[r].chains);  // checks the row itself
      continue;
    }
    CHAINLM_CHECK(rows[r].chains >= 1 && rows[r].chains <= c.n_chains(), "active chains ", rows[r].chains,
                  " is outside 1..", c.n_chains());
    CHAINLM_CHECK(rows[r].token >= 0 && rows[r].token < c.vocab_size, "token id ", rows[r].token,
                  " is outside the vocabulary (size ", c.vocab_size, ")");
    CHAINLM_CHECK(s.length() < c.max_seq_len, "the sequence would be ", s.length() + 1,
                  " tokens, longer than the model's max_seq_len ", c.max_seq_len);
    batched.push_back((int)r);
  }
  // Largest sub-models first, so the rows of every chain block are a prefix of a pass.
  std::stable_sort(batched.begin(), batched.end(),
                   [&](int a, int b) { return rows[a].chains > rows[b].chains; });
  for (size_t p = 0; p < batched.size(); p += kMaxDecodeRows) {
    const int n = (int)std::min<size_t>(kMaxDecodeRows, batched.size() - p);
    std::vector<DecodeRow> pass(n);
    for (int i = 0; i < n; ++i) pass[i] = rows[batched[p + i]];
    forward(pass.data(), n);
    for (int i = 0; i < n; ++i) out[batched[p + i]] = pass[i].session->logits_.data();
  }
  return out;
}

// session.forward_chunk's pass for one new token per row, each row over its own cache; the
// per-row kernels and batch-invariant GEMMs give each row what forward_chunk gives it alone.
void BatchDecoder::forward(const DecodeRow* rows, int n) {
  const ModelConfig& c = model_.config();
  const ChainLayout& L = model_.layout();
  const int D = c.dim, F = c.ffn_dim, V = c.vocab_size, KV = L.kv.total(), hd = L.head_dim;
  const std::vector<Group> groups = groups_of(rows, n);
  int max_pos = 0;
  for (int r = 0; r < n; ++r) {
    tokens_[r] = rows[r].token;
    positions_[r] = rows[r].session->length();
    max_pos = std::max(max_pos, positions_[r]);
  }
  auto chains_of = [&](int r) { return rows[r].chains; };
  auto kv_blocks_of = [&](int r) { return L.kv_blocks(rows[r].chains); };
  auto table = rope_table(hd, c.rope_theta, max_pos + 1);
  for (const Group& g : groups)
    embedding_forward(g.count, L.dim.prefix(g.k), tokens_.data() + g.first, model_.embedding(), D,
                      x_.data() + (size_t)g.first * D, D);

  // Per group of rows with one sub-model: RMSNorm of x into xn with gain `gain`.
  auto norm = [&](const float* gain, const float* x, int ldx) {
    for (const Group& g : groups)
      rmsnorm_forward(L.dim, g.k, g.count, x + (size_t)g.first * ldx, ldx, gain, c.norm_eps,
                      xn_.data() + (size_t)g.first * D, D, rstd_.data());
  };
  const ParamStore& ps = model_.params();
  for (int l = 0; l < c.n_layers; ++l) {
    const Model::LayerIndex& li = model_.layer(l);
    norm(ps.value(li.attention_norm), x_.data(), D);
    chain_linear_rows(L.wq, n, chains_of, xn_.data(), D, li.r_wq.data(), q_.data(), D);
    chain_linear_rows(L.wk, n, kv_blocks_of, xn_.data(), D, li.r_wk.data(), k_new_.data(), KV);
    chain_linear_rows(L.wv, n, kv_blocks_of, xn_.data(), D, li.r_wv.data(), v_new_.data(), KV);
    for (const Group& g : groups) {
      const AttentionShape as = model_.attention_shape(g.k, 1, 1, 1, 0);
      rope_forward(*table, q_.data() + (size_t)g.first * D, g.count, as.n_heads, D, positions_.data() + g.first);
      rope_forward(*table, k_new_.data() + (size_t)g.first * KV, g.count, L.active_kv_width(g.k) / hd, KV,
                   positions_.data() + g.first);
    }
    for (int r = 0; r < n; ++r) {
      KVCache& cache = rows[r].session->cache_;
      const int pos = positions_[r], width = L.active_kv_width(rows[r].chains);
      std::copy_n(k_new_.data() + (size_t)r * KV, width, cache.k_layer(l) + (size_t)pos * KV);
      std::copy_n(v_new_.data() + (size_t)r * KV, width, cache.v_layer(l) + (size_t)pos * KV);
      const AttentionShape as = model_.attention_shape(rows[r].chains, 1, 1, pos + 1, pos);
      attention_forward(as, q_.data() + (size_t)r * D, cache.k_layer(l), cache.v_layer(l),
                        att_.data() + (size_t)r * D, lse_.data() + (size_t)r * c.n_heads);
    }
    chain_linear_rows(L.wo, n, chains_of, att_.data(), D, li.r_wo.data(), x_.data(), D, 1.0f);
    norm(ps.value(li.ffn_norm), x_.data(), D);
    chain_linear_rows(L.w1, n, chains_of, xn_.data(), D, li.r_w1.data(), h1_.data(), F);
    chain_linear_rows(L.w3, n, chains_of, xn_.data(), D, li.r_w3.data(), h3_.data(), F);
    for (const Group& g : groups)
      swiglu_forward(g.count, L.ffn.prefix(g.k), h1_.data() + (size_t)g.first * F, h3_.data() + (size_t)g.first * F,
                     g_.data() + (size_t)g.first * F, F);
    chain_linear_rows(L.w2, n, chains_of, g_.data(), F, li.r_w2.data(), x_.data(), D, 1.0f);
  }
  norm(model_.final_norm(), x_.data(), D);
  for (const Group& g : groups)
    gemm_nt(g.count, V, L.dim.prefix(g.k), xn_.data() + (size_t)g.first * D, D, model_.head(), D,
            logits_.data() + (size_t)g.first * V, V, 0.0f);
  for (int r = 0; r < n; ++r) {
    InferenceSession& s = *rows[r].session;
    for (int i = 0; i < L.kv_blocks(rows[r].chains); ++i) s.cache_.filled[i] = positions_[r] + 1;
    s.tokens_.push_back(rows[r].token);
    std::copy_n(logits_.data() + (size_t)r * V, V, s.logits_.begin());
  }
}

}  // namespace chainlm
