#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"
#include "core/number_format.h"
#include "core/rng.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace chainlm {

namespace {

// Blocks of layer activations a forward pass's arena holds: layer l uses block l % this, so a
// layer's output (the next layer's input) never lands on its own input.
constexpr int kForwardOnlyBlocks = 2;

// dst[r, :width] = src[r, :width] for M rows of stride ld (the residual before a GEMM adds
// onto it), in parallel: a serial copy would leave the other cores spinning.
void copy_rows(int M, int width, const float* src, float* dst, int ld) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < M; ++r) std::memcpy(dst + (long)r * ld, src + (long)r * ld, sizeof(float) * width);
}

}  // namespace


// Activations of one (B, T) shape, laid out once. Residual stream buffers are (M, D) with
// M = B*T*K rows, K the PHD repeat (SPEC B1; 1 for the ordinary model): copy c of token t of
// sequence b is row (b*T + t)*K + c. The final norm and the head see the last copy of every
// token only, (B*T, D) rows. Every buffer uses the full width as its row stride, and
// sub-model k only touches its prefix of columns.
struct Model::Buffers {
  int B = 0, T = 0;
  // A forward pass's arena: layer l's activations are block l % kForwardOnlyBlocks's, and
  // there is no backward scratch.
  bool forward_only = false;
  AlignedVector<float> arena;
  std::vector<int> positions;      // RoPE position of every row
  std::vector<int> stream_tokens;  // with PHD: the token of every row (each repeated K times)
  struct Layer {
    float *x_in, *xn1, *rstd1, *q, *k, *v, *att, *lse, *x_mid, *xn2, *rstd2, *h1, *h3, *g;
    // bf16 weights: the GEMM inputs rounded once, in the forward, for every product that reads
    // them (q/k/v and w1/w3 share theirs; the backward's weight gradients reuse them).
    bf16_t *xn1h = nullptr, *atth = nullptr, *xn2h = nullptr, *gh = nullptr;
  };
  std::vector<Layer> layers;
  float *x_final, *xnf, *rstdf, *logits;
  // Backward scratch.
  float *dres = nullptr, *dxn = nullptr, *datt = nullptr, *dq = nullptr, *dk = nullptr,
        *dv = nullptr, *dh1 = nullptr, *dh3 = nullptr, *dg = nullptr;
  std::vector<std::vector<float>> dlogits;  // one per extra weighted chain prefix
  AlignedVector<bf16_t> arena16;            // the layers' bf16 activations (bf16 weights only)
  bf16_t *dh1h = nullptr, *dh3h = nullptr;  // and SwiGLU's input gradients, rounded as written
  bool rounded_once = false;                // the last forward filled them
  std::vector<bf16_t> dlogits16;            // the head's gradient rounded once for its two GEMMs
  std::vector<bf16_t> xnf16;                // and the final norm's output, for the head's dW
};

Model::Model(const ModelConfig& config, bool allocate) : config_(config), layout_(config) {
  const ModelConfig& c = config_;
  const ChainLayout& L = layout_;
  const int n = L.n;
  tok_embeddings_ = params_.add("tok_embeddings.weight", {c.vocab_size, c.dim}, -1, true);
  // Chain block i of a Chain-of-Linear is "<base>.chain<i>.weight", owned by chain i; the
  // CoLM-Air K/V projections are plain "<base>.weight" tensors on chain 1's input.
  auto add_chained = [&](const std::string& base, const ChainLinear& cl, bool plain) {
    std::vector<int> idx;
    const int blocks = plain ? 1 : n;
    for (int i = 0; i < blocks; ++i) {
      const std::string name = plain ? base + ".weight" : base + ".chain" + std::to_string(i) + ".weight";
      idx.push_back(params_.add(name, {cl.out.width(i), cl.in.end(i)}, i, true));
    }
    return idx;
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    LayerIndex li;
    li.attention_norm = params_.add(p + ".attention_norm.weight", {c.dim}, -1, false);
    li.wq = add_chained(p + ".attention.wq", L.wq, false);
    li.wk = add_chained(p + ".attention.wk", L.wk, L.kv_share);
    li.wv = add_chained(p + ".attention.wv", L.wv, L.kv_share);
    li.wo = add_chained(p + ".attention.wo", L.wo, false);
    li.ffn_norm = params_.add(p + ".ffn_norm.weight", {c.dim}, -1, false);
    li.w1 = add_chained(p + ".feed_forward.w1", L.w1, false);
    li.w2 = add_chained(p + ".feed_forward.w2", L.w2, false);
    li.w3 = add_chained(p + ".feed_forward.w3", L.w3, false);
    layers_.push_back(std::move(li));
  }
  norm_ = params_.add("norm.weight", {c.dim}, -1, false);
  if (!c.tie_embeddings) output_ = params_.add("output.weight", {c.vocab_size, c.dim}, -1, true);
  if (!allocate) return;
  params_.allocate();
  for (auto& li : layers_) {
    // Gradients are bound by ensure_grads(): inference holds none.
    li.g_wq.assign(li.wq.size(), nullptr);
    li.g_wk.assign(li.wk.size(), nullptr);
    li.g_wv.assign(li.wv.size(), nullptr);
    li.g_wo.assign(li.wo.size(), nullptr);
    li.g_w1.assign(li.w1.size(), nullptr);
    li.g_w2.assign(li.w2.size(), nullptr);
    li.g_w3.assign(li.w3.size(), nullptr);
  }
  bind_forward_weights();
}

void Model::ensure_grads() {
  if (params_.has_grads()) return;
  CHAINLM_CHECK(
      !quantized(), "this model holds ", weight_format(),
      " weights (a quantized checkpoint or GGUF file): quantized models do not train; train "
      "the fp32 checkpoint it was quantized from (or an F32/F16 export of it)");
  params_.allocate_grads();
  bind_grads();
}

// Points every layer's per-chain gradient blocks into the gradient buffer; a frozen block
// gets a null pointer, which the kernels read as "no weight gradient".
void Model::bind_grads() {
  for (auto& li : layers_) {
    auto bind = [&](const std::vector<int>& idx, std::vector<float*>& g) {
      for (size_t b = 0; b < idx.size(); ++b)
        g[b] = params_.info(idx[b]).frozen() ? nullptr : params_.grad(idx[b]);
    };
    bind(li.wq, li.g_wq);
    bind(li.wk, li.g_wk);
    bind(li.wv, li.g_wv);
    bind(li.wo, li.g_wo);
    bind(li.w1, li.g_w1);
    bind(li.w2, li.g_w2);
    bind(li.w3, li.g_w3);
  }
}

Model::~Model() = default;

void Model::set_backward_hook(std::function<void(std::size_t)> hook) { backward_hook_ = std::move(hook); }

std::vector<std::size_t> Model::gradient_ready_points() const {
  std::vector<std::size_t> points;
  for (const LayerIndex& li : layers_) points.push_back(params_.info(li.attention_norm).offset);
  return points;
}

float* Model::head_grad() { return params_.grad(output_ >= 0 ? output_ : tok_embeddings_); }

void Model::init_random(uint64_t seed) {
  Rng rng(seed);
  const float residual_scale = 1.0f / std::sqrt(2.0f * config_.n_layers);
  for (int i = 0; i < static_cast<int>(params_.infos().size()); ++i) {
    const ParamInfo& p = params_.info(i);
    float* v = params_.value(i);
    if (p.shape.size() == 1) {
      for (size_t j = 0; j < p.numel(); ++j) v[j] = 1.0f;
      continue;
    }
    const bool residual = p.name.find(".wo.") != std::string::npos ||
                          p.name.find(".w2.") != std::string::npos;
    const float stddev = 0.02f * (residual ? residual_scale : 1.0f);
    for (size_t j = 0; j < p.numel(); ++j) v[j] = stddev * rng.normal();
  }
}

void Model::set_freeze(const FreezeSpec& spec) {
  const int n = layout_.n;
  CHAINLM_CHECK(spec.chains >= 0, "--freeze-chains must be >= 0 (got ", spec.chains, ")");
  CHAINLM_CHECK(spec.chains < n, "--freeze-chains ", spec.chains, ": the model has ", n,
                n == 1 ? " chain" : " chains", ", so at most ", n - 1,
                " can be frozen (at least one chain must train)");
  if (spec.head_only) {
    CHAINLM_CHECK(spec.chains == 0, "--train-only head and --freeze-chains exclude each other ",
                  "(head-only training already freezes every chain's trunk)");
    CHAINLM_CHECK(output_ >= 0, "--train-only head needs an untied output head, but this model ",
                  "ties it to the embedding (tie_embeddings)");
  }
  CHAINLM_CHECK(spec.used_chains >= 0 && spec.used_chains <= n, "used chains ", spec.used_chains,
                " is outside 0..", n);
  freeze_ = spec;
  const int used = spec.used_chains > 0 ? spec.used_chains : n;
  const int64_t frozen_width = layout_.dim.prefix(spec.chains),
                used_width = layout_.dim.prefix(used);
  for (int i = 0; i < (int)params_.infos().size(); ++i) {
    const ParamInfo& p = params_.info(i);
    int64_t frozen = 0, unused = 0;
    if (p.chain >= 0) {  // a chain block (or CoLM-Air's shared wk/wv, owned by chain 1)
      if (spec.head_only || p.chain < spec.chains)
        frozen = p.cols();
      else if (p.chain >= used)
        unused = p.cols();
    } else {  // D-wide: embedding, norm gains, head
      frozen = spec.head_only && i != output_ ? p.cols() : frozen_width;
      unused = std::min(p.cols() - frozen, p.cols() - used_width);
    }
    params_.set_frozen_cols(i, frozen, unused);
  }
  if (params_.has_grads()) bind_grads();
}

std::size_t Model::parameter_floats(const ModelConfig& config) {
  return Model(config, false).params_.size();
}

// The arena ensure_buffers lays out: per layer the saved forward activations, then the final
// norm and logits rows, then the backward scratch shared by all layers (a forward pass's
// arena: two layers' activations, used in turn, and no backward scratch).
std::size_t Model::activation_floats(const ModelConfig& c, int B, int T, bool forward_only) {
  const ChainLayout layout(c);
  const std::size_t K = c.phd.repeat, Mh = (std::size_t)B * T, M = Mh * K;
  const std::size_t D = c.dim, F = c.ffn_dim, V = c.vocab_size;
  const std::size_t KV = layout.kv.total(), n = layout.n, H = c.n_heads;
  const std::size_t per_layer = M * (D * 6 + KV * 2 + F * 3 + n * 2) + (std::size_t)B * H * T * K;
  const std::size_t blocks = forward_only ? std::min(kForwardOnlyBlocks, c.n_layers) : c.n_layers;
  const std::size_t backward = forward_only ? 0 : M * (D * 5 + KV * 2 + F * 3);
  return per_layer * blocks + M * D + Mh * (D + n + V) + backward;
}

void Model::ensure_buffers(int B, int T, bool forward_only) {
  // A training arena serves a forward pass too (validation between steps reuses it).
  if (buf_ && buf_->B == B && buf_->T == T && (forward_only || !buf_->forward_only)) return;
  CHAINLM_CHECK(T <= config_.max_seq_len, "sequence length ", T, " exceeds the model's max_seq_len ",
                config_.max_seq_len);
  buf_ = std::make_unique<Buffers>();
  Buffers& b = *buf_;
  b.B = B;
  b.T = T;
  b.forward_only = forward_only;
  const PhdConfig& phd = config_.phd;
  const long K = phd.repeat, Mh = (long)B * T, M = Mh * K;
  const long D = config_.dim, F = config_.ffn_dim, V = config_.vocab_size;
  const long KV = layout_.kv.total(), n = layout_.n, H = config_.n_heads;
  const std::size_t total = activation_floats(config_, B, T, forward_only);
  b.arena.assign(total, 0.0f);
  float* p = b.arena.data();
  auto take = [&](long count) {
    float* r = p;
    p += count;
    return r;
  };
  for (int l = 0; l < config_.n_layers; ++l) {
    if (forward_only && l >= kForwardOnlyBlocks) {
      b.layers.push_back(b.layers[l % kForwardOnlyBlocks]);
      continue;
    }
    Buffers::Layer a;
    a.x_in = take(M * D);
    a.xn1 = take(M * D);
    a.rstd1 = take(M * n);
    a.q = take(M * D);
    a.k = take(M * KV);
    a.v = take(M * KV);
    a.att = take(M * D);
    a.lse = take(B * H * T * K);
    a.x_mid = take(M * D);
    a.xn2 = take(M * D);
    a.rstd2 = take(M * n);
    a.h1 = take(M * F);
    a.h3 = take(M * F);
    a.g = take(M * F);
    b.layers.push_back(a);
  }
  b.x_final = take(M * D);
  b.xnf = take(Mh * D);
  b.rstdf = take(Mh * n);
  b.logits = take(Mh * V);
  if (!forward_only) {
    b.dres = take(M * D);
    b.dxn = take(M * D);
    b.datt = take(M * D);
    b.dq = take(M * D);
    b.dk = take(M * KV);
    b.dv = take(M * KV);
    b.dh1 = take(M * F);
    b.dh3 = take(M * F);
    b.dg = take(M * F);
  }
  b.positions.resize(M);
  for (long r = 0; r < M; ++r) {
    const long row = r % (T * K);  // row in its sequence's repeated stream
    b.positions[r] = phd.position(static_cast<int>(row / K), static_cast<int>(row % K));
  }
  if (K > 1) b.stream_tokens.resize(M);
}

std::size_t Model::bf16_activation_elements(const ModelConfig& c, int B, int T, bool forward_only) {
  const std::size_t M = (std::size_t)B * T * c.phd.repeat;
  // Per layer (per block of a forward pass's arena) xn1, att, xn2 and SwiGLU's output; once,
  // the backward's two SwiGLU gradients.
  const std::size_t blocks = forward_only ? std::min(kForwardOnlyBlocks, c.n_layers) : c.n_layers;
  return blocks * M * (3 * (std::size_t)c.dim + c.ffn_dim) + (forward_only ? 0 : 2 * M * c.ffn_dim);
}

bool Model::bf16_activations() const {
  if (layers_.empty() || layers_.front().r_wq.empty()) return false;
  const WeightRef& w = layers_.front().r_wq.front();
  return w.bf16 && !w.quant;
}

void Model::ensure_bf16_activations() {
  Buffers& b = *buf_;
  if (b.layers.front().xn1h) return;
  const long M = (long)b.B * b.T * config_.phd.repeat, D = config_.dim, F = config_.ffn_dim;
  b.arena16.assign(bf16_activation_elements(config_, b.B, b.T, b.forward_only), 0);
  bf16_t* p = b.arena16.data();
  for (size_t l = 0; l < b.layers.size(); ++l) {
    Buffers::Layer& a = b.layers[l];
    if (b.forward_only && l >= kForwardOnlyBlocks) {  // its block's copies, as its fp32 ones
      const Buffers::Layer& same = b.layers[l % kForwardOnlyBlocks];
      a.xn1h = same.xn1h, a.atth = same.atth, a.xn2h = same.xn2h, a.gh = same.gh;
      continue;
    }
    a.xn1h = p;
    a.atth = p + M * D;
    a.xn2h = p + 2 * M * D;
    a.gh = p + 3 * M * D;
    p += M * (3 * D + F);
  }
  if (b.forward_only) return;
  b.dh1h = p;
  b.dh3h = p + M * F;
}

void Model::forward_trunk(const int* tokens, int B, int T, int k, bool forward_only) {
  CHAINLM_CHECK(k >= 1 && k <= layout_.n, "active chains k = ", k, " is outside 1..", layout_.n);
  ensure_buffers(B, T, forward_only);
  // bf16 weights (training or evaluating in bf16): each GEMM input is rounded once, here.
  const bool h = bf16_activations() && B * T > kMaxDecodeRows;
  if (h) ensure_bf16_activations();
  Buffers& b = *buf_;
  b.rounded_once = h;
  const ModelConfig& c = config_;
  const ChainLayout& L = layout_;
  const int K = c.phd.repeat, M = B * T * K, D = c.dim, F = c.ffn_dim, KV = L.kv.total();
  const int hd = L.head_dim, Dk = L.dim.prefix(k), Fk = L.ffn.prefix(k);
  for (int r = 0; r < B * T; ++r)
    CHAINLM_CHECK(tokens[r] >= 0 && tokens[r] < c.vocab_size, "token id ", tokens[r],
                  " is outside the vocabulary (size ", c.vocab_size, ")");
  const int* stream = tokens;  // PHD (SPEC B1): every token repeated K times in place
  if (K > 1) {
    for (int r = 0; r < M; ++r) b.stream_tokens[r] = tokens[r / K];
    stream = b.stream_tokens.data();
  }

  embedding_forward(M, Dk, stream, embedding(), D, b.layers[0].x_in, D);
  AttentionShape as = attention_shape(k, B, T * K, T * K, 0);
  as.bf16_products = h && attention_runs_bf16_products();  // where they beat fp32 tiles
  const int kv_heads_active = L.active_kv_width(k) / hd;

  // y (+)= x W^T over chain blocks, from x's bf16 copy xh (rounded once) when there is one.
  auto linear = [&](const ChainLinear& cl, int blocks, const float* x, bf16_t* xh, int ld,
                    const WeightRef* w, float* y, int ldy, float beta) {
    if (xh)
      chain_linear_forward(cl, blocks, M, xh, ld, w, y, ldy, beta);
    else
      chain_linear_forward(cl, blocks, M, x, ld, w, y, ldy, beta);
  };
  // x's bf16 copy (its first `width` columns), or none in fp32.
  auto rounded = [&](const float* x, bf16_t* xh, int width, int ld) -> bf16_t* {
    if (!h) return nullptr;
    to_bf16_rows(M, width, x, ld, xh, ld);
    return xh;
  };
  // RMSNorm of x into y, or in bf16 straight into its bf16 copy yh (returned): the products
  // and the backward read nothing else of it, so its fp32 form is not written at all. SwiGLU's
  // output likewise.
  auto norm = [&](const float* x, const float* gain, float* y, bf16_t* yh, float* rstd) {
    if (!h) {
      rmsnorm_forward(L.dim, k, M, x, D, gain, c.norm_eps, y, D, rstd);
      return (bf16_t*)nullptr;
    }
    rmsnorm_forward(L.dim, k, M, x, D, gain, c.norm_eps, yh, D, rstd);
    return yh;
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerIndex& li = layers_[l];
    Buffers::Layer& a = b.layers[l];
    float* x_out = l + 1 < c.n_layers ? b.layers[l + 1].x_in : b.x_final;
    bf16_t* xn1h = norm(a.x_in, params_.value(li.attention_norm), a.xn1, a.xn1h, a.rstd1);
    linear(L.wq, k, a.xn1, xn1h, D, li.r_wq.data(), a.q, D, 0.0f);
    linear(L.wk, L.kv_blocks(k), a.xn1, xn1h, D, li.r_wk.data(), a.k, KV, 0.0f);
    linear(L.wv, L.kv_blocks(k), a.xn1, xn1h, D, li.r_wv.data(), a.v, KV, 0.0f);
    rope_forward(a.q, M, as.n_heads, hd, D, b.positions.data(), c.rope_theta, c.rope_scaling);
    rope_forward(a.k, M, kv_heads_active, hd, KV, b.positions.data(), c.rope_theta,
                 c.rope_scaling);
    attention_forward(as, a.q, a.k, a.v, a.att, a.lse);
    // x_mid = x_in + Wo·att: copy the residual, then let the GEMM add onto it.
    copy_rows(M, Dk, a.x_in, a.x_mid, D);
    linear(L.wo, k, a.att, rounded(a.att, a.atth, Dk, D), D, li.r_wo.data(), a.x_mid, D, 1.0f);
    bf16_t* xn2h = norm(a.x_mid, params_.value(li.ffn_norm), a.xn2, a.xn2h, a.rstd2);
    linear(L.w1, k, a.xn2, xn2h, D, li.r_w1.data(), a.h1, F, 0.0f);
    linear(L.w3, k, a.xn2, xn2h, D, li.r_w3.data(), a.h3, F, 0.0f);
    if (h)
      swiglu_forward(M, Fk, a.h1, a.h3, a.gh, F);
    else
      swiglu_forward(M, Fk, a.h1, a.h3, a.g, F);
    copy_rows(M, Dk, a.x_mid, x_out, D);
    linear(L.w2, k, a.g, h ? a.gh : nullptr, F, li.r_w2.data(), x_out, D, 1.0f);
  }
  // Only the last copy of every token feeds the head (SPEC B1: the loss is taken there).
  rmsnorm_forward(L.dim, k, B * T, b.x_final + (size_t)(K - 1) * D, K * D, params_.value(norm_),
                  c.norm_eps, b.xnf, D, b.rstdf);
}

StepLosses Model::forward_backward(const int* tokens, const int* targets, int B, int T,
                                   const std::vector<float>& chain_weights,
                                   float grad_multiplier) {
  ensure_grads();
  const ModelConfig& c = config_;
  const ChainLayout& L = layout_;
  CHAINLM_CHECK(static_cast<int>(chain_weights.size()) == L.n, "chain loss weights list ",
                chain_weights.size(), " entries, the model has ", count_of(L.n, "chain"));
  double wsum = 0.0;
  int k = 0;
  for (int i = 0; i < L.n; ++i) {
    CHAINLM_CHECK(chain_weights[i] >= 0.0f && std::isfinite(chain_weights[i]),
                  "chain loss weights must be finite numbers >= 0 (got ", chain_weights[i], ")");
    wsum += chain_weights[i];
    if (chain_weights[i] > 0.0f) k = i + 1;
  }
  CHAINLM_CHECK(k > 0, "at least one chain loss weight must be positive");
  // Chain tuning: chains < f are frozen (f = 0 without freezing); their activations need no
  // gradient, and the head and embedding columns [0, Df) get none.
  const int f = freeze_.head_only ? 0 : freeze_.chains;
  CHAINLM_CHECK(k > f, "the chain loss weights put no weight on a sub-model beyond the ", f,
                " frozen chain(s): nothing would train");
  // Chains past used_chains have no gradient blocks bound (bind_grads): they may not be computed.
  CHAINLM_CHECK(freeze_.used_chains == 0 || k <= freeze_.used_chains,
                "the chain loss weights weigh sub-model ", k, ", past the ", freeze_.used_chains,
                " chain(s) set_freeze was told of");
  forward_trunk(tokens, B, T, k);
  Buffers& b = *buf_;
  // Mh head rows (one per token), M trunk rows (K per token with PHD).
  const int K = c.phd.repeat, Mh = B * T, M = Mh * K;
  const int D = c.dim, F = c.ffn_dim, V = c.vocab_size, KV = L.kv.total(), hd = L.head_dim;
  const int* stream_tokens = K > 1 ? b.stream_tokens.data() : tokens;
  const int Dk = L.dim.prefix(k), Fk = L.ffn.prefix(k);
  long n_valid = 0;
  for (int r = 0; r < Mh; ++r) n_valid += targets[r] >= 0;
  StepLosses out;
  out.chain_loss.assign(L.n, std::numeric_limits<double>::quiet_NaN());
  out.tokens = n_valid;
  if (n_valid == 0) return out;

  // Head: logits_k is a running sum over chains (SPEC A3); one GEMM per segment of chains
  // that ends at a weighted prefix. The last segment's gradient lives in b.logits itself.
  std::vector<int> seg_end;  // chain index (exclusive) where each segment ends
  for (int i = 0; i < k; ++i)
    if (chain_weights[i] > 0.0f) seg_end.push_back(i + 1);
  const int n_seg = static_cast<int>(seg_end.size());
  if ((int)b.dlogits.size() < n_seg - 1) b.dlogits.resize(n_seg - 1);
  const WeightRef Wout = head();  // bf16 in a bf16 run: every head product is then a bf16 GEMM
  int seg_begin = 0;
  for (int s = 0; s < n_seg; ++s) {
    const int c0 = L.dim.prefix(seg_begin), c1 = L.dim.prefix(seg_end[s]);
    gemm_nt(Mh, V, c1 - c0, b.xnf + c0, D, Wout.offset(c0), D, b.logits, V, s == 0 ? 0.0f : 1.0f);
    const int chain = seg_end[s] - 1;
    const float scale = (float)(chain_weights[chain] / wsum / n_valid) * grad_multiplier;
    float* dlog = b.logits;
    if (s + 1 < n_seg) {
      b.dlogits[s].resize((size_t)Mh * V);
      dlog = b.dlogits[s].data();
    }
    const double sum = cross_entropy_forward_backward(Mh, V, b.logits, V, targets, scale, dlog,
                                                      nullptr);
    out.chain_loss[chain] = sum / n_valid;
    out.loss += chain_weights[chain] / wsum * out.chain_loss[chain];
    seg_begin = seg_end[s];
  }
  // Backward through the head: segment s receives G_s = sum of dlogits of segments >= s.
  float* dWout = head_grad();
  const int Df = L.dim.prefix(f);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < M; ++r) std::memset(b.dres + (long)r * D, 0, sizeof(float) * D);
  float* G = b.logits;
  for (int s = n_seg - 1; s >= 0; --s) {
    if (s < n_seg - 1) {
      const float* d = b.dlogits[s].data();
#pragma omp parallel for simd schedule(static)
      for (long i = 0; i < (long)Mh * V; ++i) G[i] += d[i];
    }
    const int c1 = L.dim.prefix(seg_end[s]);
    const int c0 = std::max(L.dim.prefix(s == 0 ? 0 : seg_end[s - 1]), Df);
    if (c1 <= c0) continue;  // a segment of frozen chains
    if (Wout.bf16) {
      // G rounded once for both products (Mh x V: the largest operand of the step).
      b.dlogits16.resize((size_t)Mh * V);
      bf16_t* Gh = b.dlogits16.data();
      to_bf16_rows(Mh, V, G, V, Gh, V);
      if (!freeze_.head_only) gemm_nn_bf16(Mh, c1 - c0, V, Gh, V, Wout.bf16 + c0, D, b.dxn + c0, D, 0.0f);
      b.xnf16.resize((size_t)Mh * (c1 - c0));
      to_bf16_rows(Mh, c1 - c0, b.xnf + c0, D, b.xnf16.data(), c1 - c0);
      gemm_tn_bf16(V, c1 - c0, Mh, Gh, V, b.xnf16.data(), c1 - c0, dWout + c0, D, 1.0f);
    } else {
      if (!freeze_.head_only) gemm_nn(Mh, c1 - c0, V, G, V, Wout.f32 + c0, D, b.dxn + c0, D, 0.0f);
      gemm_tn(V, c1 - c0, Mh, G, V, b.xnf + c0, D, dWout + c0, D, 1.0f);
    }
  }
  if (freeze_.head_only) return out;  // nothing below the head trains
  // The head saw the last copies only; every other row's gradient starts at zero.
  const size_t last = (size_t)(K - 1) * D;
  rmsnorm_backward(L.dim, k, Mh, b.x_final + last, K * D, params_.value(norm_), b.rstdf, b.dxn, D,
                   b.dres + last, K * D, params_.grad(norm_));
  // The per-chain RMSNorm backward produces gain gradients for every active chain; the frozen
  // chains' slices are cleared (here and per layer, before the backward hook sees the layer)
  // so no frozen element ever carries a gradient.
  auto clear_frozen = [&](int idx) {
    if (Df > 0) std::memset(params_.grad(idx), 0, sizeof(float) * Df);
  };
  clear_frozen(norm_);

  AttentionShape as = attention_shape(k, B, T * K, T * K, 0);
  as.bf16_products = b.rounded_once && attention_runs_bf16_products();  // as the forward ran them
  const int kv_heads_active = L.active_kv_width(k) / hd;
  const int KVk = L.active_kv_width(k);

  // dx (+)= dy W and dW += dy^T x over chain blocks, from x's bf16 copy xh when the forward
  // made one.
  auto linear_backward = [&](const ChainLinear& cl, int blocks, const float* x, const bf16_t* xh,
                             int ldx, const WeightRef* w, const float* dy, int ldy, float* dx,
                             int lddx, float* const* dw, bool overwrite) {
    if (b.rounded_once)
      chain_linear_backward(cl, blocks, M, xh, ldx, w, dy, ldy, dx, lddx, dw, overwrite, f);
    else
      chain_linear_backward(cl, blocks, M, x, ldx, w, dy, ldy, dx, lddx, dw, overwrite, f);
  };
  for (int l = c.n_layers - 1; l >= 0; --l) {
    LayerIndex& li = layers_[l];
    Buffers::Layer& a = b.layers[l];
    // FFN: x_out = x_mid + W2·swiglu(W1·xn2, W3·xn2); b.dres holds d(x_out).
    linear_backward(L.w2, k, a.g, a.gh, F, li.r_w2.data(), b.dres, D, b.dg, F, li.g_w2.data(), true);
    if (b.rounded_once) {
      // The gradients of h1 and h3 feed their products only: rounded as SwiGLU writes them.
      swiglu_backward(M, Fk, a.h1, a.h3, b.dg, b.dh1h, b.dh3h, F);
      chain_linear_backward(L.w1, k, M, a.xn2h, D, li.r_w1.data(), b.dh1h, F, b.dxn, D,
                            li.g_w1.data(), true, f);
      chain_linear_backward(L.w3, k, M, a.xn2h, D, li.r_w3.data(), b.dh3h, F, b.dxn, D,
                            li.g_w3.data(), false, f);
    } else {
      swiglu_backward(M, Fk, a.h1, a.h3, b.dg, b.dh1, b.dh3, F);
      linear_backward(L.w1, k, a.xn2, a.xn2h, D, li.r_w1.data(), b.dh1, F, b.dxn, D, li.g_w1.data(),
                      true);
      linear_backward(L.w3, k, a.xn2, a.xn2h, D, li.r_w3.data(), b.dh3, F, b.dxn, D, li.g_w3.data(),
                      false);
    }
    rmsnorm_backward(L.dim, k, M, a.x_mid, D, params_.value(li.ffn_norm), a.rstd2, b.dxn, D,
                     b.dres, D, params_.grad(li.ffn_norm));
    // Attention: x_mid = x_in + Wo·attention(rope(Wq·xn1), rope(Wk·xn1), Wv·xn1).
    linear_backward(L.wo, k, a.att, a.atth, D, li.r_wo.data(), b.dres, D, b.datt, D, li.g_wo.data(), true);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < M; ++r) {
      std::memset(b.dq + (long)r * D, 0, sizeof(float) * Dk);
      std::memset(b.dk + (long)r * KV, 0, sizeof(float) * KVk);
      std::memset(b.dv + (long)r * KV, 0, sizeof(float) * KVk);
    }
    attention_backward(as, a.q, a.k, a.v, a.att, a.lse, b.datt, b.dq, b.dk, b.dv);
    rope_backward(b.dq, M, as.n_heads, hd, D, b.positions.data(), c.rope_theta, c.rope_scaling);
    rope_backward(b.dk, M, kv_heads_active, hd, KV, b.positions.data(), c.rope_theta,
                  c.rope_scaling);
    linear_backward(L.wq, k, a.xn1, a.xn1h, D, li.r_wq.data(), b.dq, D, b.dxn, D, li.g_wq.data(), true);
    linear_backward(L.wk, L.kv_blocks(k), a.xn1, a.xn1h, D, li.r_wk.data(), b.dk, KV, b.dxn, D,
                    li.g_wk.data(), false);
    linear_backward(L.wv, L.kv_blocks(k), a.xn1, a.xn1h, D, li.r_wv.data(), b.dv, KV, b.dxn, D,
                    li.g_wv.data(), false);
    rmsnorm_backward(L.dim, k, M, a.x_in, D, params_.value(li.attention_norm), a.rstd1, b.dxn, D,
                     b.dres, D, params_.grad(li.attention_norm));
    clear_frozen(li.attention_norm);
    clear_frozen(li.ffn_norm);
    if (backward_hook_) backward_hook_(params_.info(li.attention_norm).offset);
  }
  embedding_backward(M, Dk - Df, stream_tokens, b.dres + Df, D, params_.grad(tok_embeddings_) + Df, D);
  return out;
}

std::vector<double> Model::evaluate(const int* tokens, const int* targets, int B, int T, int k_max,
                                    long* n_targets) {
  forward_trunk(tokens, B, T, k_max, true);
  Buffers& b = *buf_;
  const int M = B * T, D = config_.dim, V = config_.vocab_size;
  const WeightRef Wout = head();
  std::vector<double> sums(k_max, 0.0);
  // logits_k is a running sum over chains (SPEC A3), one GEMM per chain's columns; a quantized
  // head can only be entered at a block boundary, so with chains that do not start on one each
  // sub-model's logits are one GEMM over its whole prefix instead.
  bool running = true;
  for (int i = 0; i < k_max && Wout.quant; ++i) running &= layout_.dim.begin(i) % kQuantBlock == 0;
  for (int i = 0; i < k_max; ++i) {
    const int c0 = running ? layout_.dim.begin(i) : 0, c1 = layout_.dim.end(i);
    gemm_nt(M, V, c1 - c0, b.xnf + c0, D, Wout.offset(c0), D, b.logits, V, i == 0 || !running ? 0.0f : 1.0f);
    sums[i] = cross_entropy_forward_backward(M, V, b.logits, V, targets, 0.0f, nullptr, nullptr);
  }
  if (n_targets) {
    long count = 0;
    for (int r = 0; r < M; ++r) count += targets[r] >= 0;
    *n_targets = count;
  }
  return sums;
}

void Model::logits(const int* tokens, int B, int T, int k, float* out) {
  forward_trunk(tokens, B, T, k, true);
  const int Dk = layout_.dim.prefix(k);
  gemm_nt(B * T, config_.vocab_size, Dk, buf_->xnf, config_.dim, head(), config_.dim, out,
          config_.vocab_size, 0.0f);
}

AttentionShape Model::attention_shape(int k, int batch, int q_len, int kv_len, int q_offset) const {
  const ChainLayout& L = layout_;
  AttentionShape as;
  as.batch = batch;
  as.q_len = q_len;
  as.kv_len = kv_len;
  as.q_offset = q_offset;
  as.mask = AttentionMask::phd(config_.phd.repeat, config_.phd.window, config_.phd.chunk);
  as.n_heads = L.active_heads(k);
  as.head_dim = L.head_dim;
  as.q_stride = config_.dim;
  as.kv_stride = L.kv.total();
  as.o_stride = config_.dim;
  as.kv_head_of = L.kv_head_of.data();
  as.scale = 1.0f / std::sqrt((float)L.head_dim);
  return as;
}

long Model::matmul_params(int k) const {
  long total = 0;
  auto add = [&](const ChainLinear& cl, int blocks) {
    for (int i = 0; i < blocks; ++i) total += (long)cl.out.width(i) * cl.in.end(i);
  };
  const ChainLayout& L = layout_;
  add(L.wq, k);
  add(L.wk, L.kv_blocks(k));
  add(L.wv, L.kv_blocks(k));
  add(L.wo, k);
  add(L.w1, k);
  add(L.w2, k);
  add(L.w3, k);
  total *= config_.n_layers;
  total += (long)config_.vocab_size * L.dim.prefix(k);
  return total;
}

long Model::num_params(int k) const {
  const long Dk = layout_.dim.prefix(k);
  long total = matmul_params(k) + (long)config_.n_layers * 2 * Dk + Dk;
  if (!config_.tie_embeddings) total += (long)config_.vocab_size * Dk;
  return total;
}

}  // namespace chainlm
