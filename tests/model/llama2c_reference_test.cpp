// Exactness against llama2.c: a minimal transliteration of run.c's forward pass and greedy loop
// (the reference), run on the weights read_llama2c returns, against chainlm's imported model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "infer/generator.h"
#include "io/llama2c.h"
#include "io/llama2c_test_util.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/llama2c_import.h"

namespace chainlm {
namespace {

const std::string kStories = CHAINLM_SOURCE_DIR "/../shared/data/stories260K";

// ---- run.c, as written there (float math, naive loops, one token at a time) ----------------

void rmsnorm(float* o, const float* x, const float* weight, int size) {
  float ss = 0.0f;
  for (int j = 0; j < size; j++) ss += x[j] * x[j];
  ss /= size;
  ss += 1e-5f;
  ss = 1.0f / sqrtf(ss);
  for (int j = 0; j < size; j++) o[j] = weight[j] * (ss * x[j]);
}

void softmax(float* x, int size) {
  float max_val = x[0];
  for (int i = 1; i < size; i++)
    if (x[i] > max_val) max_val = x[i];
  float sum = 0.0f;
  for (int i = 0; i < size; i++) {
    x[i] = expf(x[i] - max_val);
    sum += x[i];
  }
  for (int i = 0; i < size; i++) x[i] /= sum;
}

// W (d,n) @ x (n,) -> xout (d,)
void matmul(float* xout, const float* x, const float* w, int n, int d) {
  for (int i = 0; i < d; i++) {
    float val = 0.0f;
    for (int j = 0; j < n; j++) val += w[i * n + j] * x[j];
    xout[i] = val;
  }
}

class RunC {
 public:
  explicit RunC(const Llama2cWeights& w) : w_(w), p_(w.h) {
    const int dim = p_.dim, kv_dim = p_.kv_dim();
    x_.resize(dim);
    xb_.resize(dim);
    xb2_.resize(dim);
    hb_.resize(p_.hidden_dim);
    hb2_.resize(p_.hidden_dim);
    q_.resize(dim);
    key_cache_.resize((size_t)p_.n_layers * p_.seq_len * kv_dim);
    value_cache_.resize((size_t)p_.n_layers * p_.seq_len * kv_dim);
    att_.resize((size_t)p_.n_heads * p_.seq_len);
    logits_.resize(p_.vocab_size);
  }

  const float* forward(int token, int pos) {
    const Llama2cHeader* p = &p_;
    float* x = x_.data();
    const int dim = p->dim;
    const int kv_dim = (p->dim * p->n_kv_heads) / p->n_heads;
    const int kv_mul = p->n_heads / p->n_kv_heads;
    const int hidden_dim = p->hidden_dim;
    const int head_size = dim / p->n_heads;
    const float* wcls = p->shared_classifier ? w_.token_embedding.data() : w_.wcls.data();

    std::memcpy(x, w_.token_embedding.data() + (size_t)token * dim, dim * sizeof(float));
    for (unsigned long long l = 0; l < (unsigned long long)p->n_layers; l++) {
      rmsnorm(xb_.data(), x, w_.rms_att.data() + l * dim, dim);
      const size_t loff = l * p->seq_len * kv_dim;
      float* k = key_cache_.data() + loff + pos * kv_dim;
      float* v = value_cache_.data() + loff + pos * kv_dim;
      matmul(q_.data(), xb_.data(), w_.wq.data() + l * dim * dim, dim, dim);
      matmul(k, xb_.data(), w_.wk.data() + l * dim * kv_dim, dim, kv_dim);
      matmul(v, xb_.data(), w_.wv.data() + l * dim * kv_dim, dim, kv_dim);

      // RoPE relative positional encoding: complex-valued rotate q and k in each head
      for (int i = 0; i < dim; i += 2) {
        const int head_dim = i % head_size;
        const float freq = 1.0f / powf(10000.0f, head_dim / (float)head_size);
        const float val = pos * freq;
        const float fcr = cosf(val);
        const float fci = sinf(val);
        const int rotn = i < kv_dim ? 2 : 1;  // how many vectors? 2 = q & k, 1 = q only
        for (int vi = 0; vi < rotn; vi++) {
          float* vec = vi == 0 ? q_.data() : k;
          const float v0 = vec[i];
          const float v1 = vec[i + 1];
          vec[i] = v0 * fcr - v1 * fci;
          vec[i + 1] = v0 * fci + v1 * fcr;
        }
      }

      // multihead attention. iterate over all heads
      for (int h = 0; h < p->n_heads; h++) {
        const float* q = q_.data() + h * head_size;
        float* att = att_.data() + h * p->seq_len;
        for (int t = 0; t <= pos; t++) {
          const float* kt = key_cache_.data() + loff + t * kv_dim + (h / kv_mul) * head_size;
          float score = 0.0f;
          for (int i = 0; i < head_size; i++) score += q[i] * kt[i];
          score /= sqrtf(head_size);
          att[t] = score;
        }
        softmax(att, pos + 1);
        float* xb = xb_.data() + h * head_size;
        std::memset(xb, 0, head_size * sizeof(float));
        for (int t = 0; t <= pos; t++) {
          const float* vt = value_cache_.data() + loff + t * kv_dim + (h / kv_mul) * head_size;
          const float a = att[t];
          for (int i = 0; i < head_size; i++) xb[i] += a * vt[i];
        }
      }

      matmul(xb2_.data(), xb_.data(), w_.wo.data() + l * dim * dim, dim, dim);
      for (int i = 0; i < dim; i++) x[i] += xb2_[i];

      rmsnorm(xb_.data(), x, w_.rms_ffn.data() + l * dim, dim);
      matmul(hb_.data(), xb_.data(), w_.w1.data() + l * dim * hidden_dim, dim, hidden_dim);
      matmul(hb2_.data(), xb_.data(), w_.w3.data() + l * dim * hidden_dim, dim, hidden_dim);
      // SwiGLU non-linearity
      for (int i = 0; i < hidden_dim; i++) {
        float val = hb_[i];
        val *= (1.0f / (1.0f + expf(-val)));  // silu(x)=x*σ(x), where σ(x) is the logistic sigmoid
        val *= hb2_[i];
        hb_[i] = val;
      }
      matmul(xb_.data(), hb_.data(), w_.w2.data() + l * dim * hidden_dim, hidden_dim, dim);
      for (int i = 0; i < dim; i++) x[i] += xb_[i];
    }
    rmsnorm(x, x, w_.rms_final.data(), dim);
    matmul(logits_.data(), x, wcls, p->dim, p->vocab_size);
    return logits_.data();
  }

 private:
  const Llama2cWeights& w_;
  Llama2cHeader p_;
  std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, key_cache_, value_cache_, att_, logits_;
};

int argmax(const float* probabilities, int n) {
  int max_i = 0;
  float max_p = probabilities[0];
  for (int i = 1; i < n; i++) {
    if (probabilities[i] > max_p) {
      max_i = i;
      max_p = probabilities[i];
    }
  }
  return max_i;
}

struct Reference {
  std::vector<int> tokens;                 // generated after BOS
  std::vector<std::vector<float>> logits;  // logits[pos] computed at position pos
};

// run.c's generate with temperature 0 from the prompt [BOS], for `steps` positions.
Reference runc_greedy(const Llama2cWeights& w, int steps) {
  RunC runc(w);
  Reference ref;
  int token = 1;
  for (int pos = 0; pos < steps; pos++) {
    const float* logits = runc.forward(token, pos);
    ref.logits.emplace_back(logits, logits + w.h.vocab_size);
    const int next = argmax(logits, w.h.vocab_size);
    if (next == 1) break;
    ref.tokens.push_back(next);
    token = next;
  }
  return ref;
}

// Max |chainlm - run.c| over every position's logits, for the sequence [BOS] + tokens.
float max_logit_diff(Model& model, const Reference& ref, const std::vector<int>& seq) {
  const int V = model.config().vocab_size, T = (int)seq.size();
  std::vector<float> logits((size_t)T * V);
  model.logits(seq.data(), 1, T, 1, logits.data());
  float worst = 0;
  for (int t = 0; t < T && t < (int)ref.logits.size(); ++t)
    for (int v = 0; v < V; ++v)
      worst = std::max(worst, std::fabs(logits[(size_t)t * V + v] - ref.logits[t][v]));
  return worst;
}

TEST(Llama2cImport, ConfigIsOrdinaryLlama) {
  const Llama2cHeader h = testing::small_llama2c_header(false);
  const ModelConfig c = config_from_llama2c(h, "test");
  EXPECT_EQ(c.chains, std::vector<int>{1});
  EXPECT_FALSE(c.kv_share);
  EXPECT_EQ(c.dim, 48);
  EXPECT_EQ(c.ffn_dim, 100);
  EXPECT_EQ(c.n_heads, 6);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.vocab_size, 67);
  EXPECT_EQ(c.max_seq_len, 32);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(config_from_llama2c(testing::small_llama2c_header(true), "test").tie_embeddings);
  // Wrong array sizes are an error, not an out-of-bounds copy.
  Llama2cWeights w = testing::random_llama2c(h, 1);
  w.w2.pop_back();
  EXPECT_THROW(model_from_llama2c(w), Error);
  // Nor are weights that are not finite (docs/formats.md): refused naming the tensor.
  Llama2cWeights nan = testing::random_llama2c(h, 1);
  nan.wq[nan.wq.size() - 1] = std::numeric_limits<float>::infinity();  // the last layer's
  try {
    model_from_llama2c(nan, "stories.bin");
    ADD_FAILURE() << "an infinite weight was loaded";
  } catch (const Error& e) {
    const std::string last =
        "layers." + std::to_string(h.n_layers - 1) + ".attention.wq.chain0.weight";
    EXPECT_NE(
        std::string(e.what()).find("stories.bin: tensor '" + last + "' holds a non-finite value"),
        std::string::npos)
        << e.what();
  }
}

// Random weights, GQA (kv_mul 3), separate classifier: every position of a full-length
// sequence, through the file format and load_model.
TEST(Llama2cImport, RandomModelMatchesRunCAtEveryPosition) {
  testing::TempDir dir;
  for (bool shared : {false, true}) {
    const Llama2cWeights w = testing::random_llama2c(testing::small_llama2c_header(shared), 21);
    const std::string path = dir.file("model.bin");
    write_llama2c(w, path);
    auto model = load_model(path);
    EXPECT_EQ(model->config().tie_embeddings, shared);
    // Teacher-forced run.c over a fixed random sequence filling the whole context.
    const std::vector<int> seq = [&] {
      Rng rng(5);
      std::vector<int> s(w.h.seq_len);
      for (auto& t : s) t = (int)rng.below(w.h.vocab_size);
      return s;
    }();
    RunC runc(w);
    Reference ref;
    for (int pos = 0; pos < (int)seq.size(); ++pos) {
      const float* l = runc.forward(seq[pos], pos);
      ref.logits.emplace_back(l, l + w.h.vocab_size);
    }
    float largest = 0;  // the tolerance is meaningful only if the logits are not tiny
    for (const auto& row : ref.logits)
      for (float v : row) largest = std::max(largest, std::fabs(v));
    EXPECT_GT(largest, 2.0f);
    const float diff = max_logit_diff(*model, ref, seq);
    EXPECT_LT(diff, 1e-4f) << "shared classifier " << shared;
    std::printf("[ random model, shared classifier %d: max |logit| %.3g, max |diff| %.3g ]\n",
                (int)shared, largest, diff);
  }
}

TEST(Llama2cImport, Stories260KMatchesRunCGreedy) {
  const std::string bin = kStories + "/stories260K.bin";
  const std::string tok_bin = kStories + "/tok512.bin", tok_model = kStories + "/tok512.model";
  if (!std::filesystem::exists(bin) || !std::filesystem::exists(tok_bin) ||
      !std::filesystem::exists(tok_model))
    GTEST_SKIP() << "stories260K data not present under " << kStories;
  const Llama2cWeights w = read_llama2c(bin);
  constexpr int kTokens = 100;
  const Reference ref = runc_greedy(w, kTokens);
  ASSERT_EQ((int)ref.tokens.size(), kTokens);

  auto model = model_from_llama2c(w);
  for (const std::string& tok_path : {tok_bin, tok_model}) {
    auto tok = load_tokenizer(tok_path);
    GenerateOptions opt;
    opt.max_tokens = kTokens;
    opt.sampling.temperature = 0;
    const GenerateResult r = generate(*model, *tok, "", opt);
    EXPECT_EQ(r.prompt_tokens, std::vector<int>{1});
    EXPECT_EQ(r.tokens, ref.tokens) << tok_path;
    // The documented output of run.c on stories260K at temperature 0.
    const std::string expected =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "park. One day, she saw a big, red ball.";
    EXPECT_EQ(r.text.substr(0, expected.size()), expected) << tok_path << ": " << r.text;
    EXPECT_EQ(tok->decode(r.tokens), r.text) << tok_path;
  }

  std::vector<int> seq = {1};
  seq.insert(seq.end(), ref.tokens.begin(), ref.tokens.end() - 1);
  const float diff = max_logit_diff(*model, ref, seq);
  EXPECT_LT(diff, 1e-4f);
  std::printf("[ stories260K: %d greedy tokens equal to run.c; max |logit diff| %.3g ]\n", kTokens,
              diff);

  // load_model on the file is the same model.
  auto loaded = load_model(bin);
  EXPECT_EQ(loaded->params().size(), model->params().size());
  EXPECT_TRUE(std::equal(model->params().values(),
                         model->params().values() + model->params().size(),
                         loaded->params().values()));
}

TEST(Llama2cImport, LoadModelRefusesTruncatedBin) {
  testing::TempDir dir;
  const Llama2cWeights w = testing::random_llama2c(testing::small_llama2c_header(true), 2);
  const std::string good = dir.file("good.bin"), cut = dir.file("cut.bin");
  write_llama2c(w, good);
  const std::string bytes = testing::read_bytes(good);
  testing::write_bytes(cut, bytes.substr(0, bytes.size() / 3));
  try {
    load_model(cut);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(cut), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated: expected " + std::to_string(bytes.size()) + " bytes"),
              std::string::npos)
        << msg;
  }
}

}  // namespace
}  // namespace chainlm
