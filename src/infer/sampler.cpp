#include "infer/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "kernels/argmax.h"

namespace chainlm {

void validate_sampling(const SamplingOptions& o) {
  CHAINLM_CHECK(std::isfinite(o.temperature) && o.temperature >= 0,
                "temperature must be finite and >= 0 (got ", o.temperature, ")");
  CHAINLM_CHECK(o.top_k >= 0, "top_k must be >= 0 (got ", o.top_k, ")");
  CHAINLM_CHECK(o.top_p > 0 && o.top_p <= 1, "top_p must be in (0, 1] (got ", o.top_p, ")");
  CHAINLM_CHECK(std::isfinite(o.presence_penalty) && std::fabs(o.presence_penalty) <= 2,
                "presence_penalty must be in [-2, 2] (got ", o.presence_penalty, ")");
  CHAINLM_CHECK(std::isfinite(o.frequency_penalty) && std::fabs(o.frequency_penalty) <= 2,
                "frequency_penalty must be in [-2, 2] (got ", o.frequency_penalty, ")");
  for (const auto& [id, bias] : o.logit_bias)
    CHAINLM_CHECK(id >= 0 && std::isfinite(bias) && std::fabs(bias) <= 100, "logit_bias of token ", id,
                  " must be in [-100, 100] (got ", bias, ")");
}

const float* Sampler::adjust(const float* logits, int V) {
  if (opt_.logit_bias.empty() && (counts_.empty() || (opt_.presence_penalty == 0 && opt_.frequency_penalty == 0)))
    return logits;
  adjusted_.assign(logits, logits + V);
  for (const auto& [id, n] : counts_)
    if (id < V) adjusted_[id] -= opt_.presence_penalty + opt_.frequency_penalty * (float)n;
  for (const auto& [id, bias] : opt_.logit_bias)
    if (id < V) adjusted_[id] += bias;
  return adjusted_.data();
}

namespace {

// The index of the first logit that is NaN or infinite, or -1. By the bits (exponent all ones),
// a loop the compiler vectorizes: a decoding step's head is far costlier.
int first_nonfinite(const float* x, int n) {
  bool any = false;
  for (int i = 0; i < n; ++i) any |= (std::bit_cast<uint32_t>(x[i]) & 0x7f800000u) == 0x7f800000u;
  if (!any) return -1;
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

}  // namespace

int Sampler::sample(const float* raw_logits, int V) {
  // A diverged model's logits (NaN from weights that overflow in the forward pass) gave token 0
  // greedily, or random words sampled, without a word (a user trial); eval ppl says the same.
  if (const int bad = first_nonfinite(raw_logits, V); bad >= 0)
    fail("the model computes NaN or infinite logits (logit ", bad, " = ", raw_logits[bad],
         "): a weight holds NaN or a value near float's range (a corrupt file, or a run that "
         "diverged)");
  const int token = sample_adjusted(adjust(raw_logits, V), V);
  if (opt_.presence_penalty != 0 || opt_.frequency_penalty != 0) ++counts_[token];
  return token;
}

int Sampler::sample_adjusted(const float* logits, int V) {
  if (opt_.temperature == 0.0f) return first_argmax(logits, V);
  scratch_.resize(V);
  for (int i = 0; i < V; ++i) scratch_[i] = {logits[i] / opt_.temperature, i};
  int n = V;
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (opt_.top_k > 0 && opt_.top_k < V) {
    std::partial_sort(scratch_.begin(), scratch_.begin() + opt_.top_k, scratch_.end(), by_logit);
    n = opt_.top_k;
  } else if (opt_.top_p < 1.0f) {
    std::sort(scratch_.begin(), scratch_.end(), by_logit);
  }
  const float mx = std::max_element(scratch_.begin(), scratch_.begin() + n,
                                    [](const auto& a, const auto& b) { return a.first < b.first; })
                       ->first;
  // A temperature so small that a logit / temperature overflows (1e-40: infinities, then NaN
  // probabilities, and the last token id every time) is greedy sampling to float precision.
  if (!std::isfinite(mx)) return first_argmax(logits, V);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    scratch_[i].first = std::exp(scratch_[i].first - mx);
    sum += scratch_[i].first;
  }
  if (opt_.top_p < 1.0f) {
    // scratch_[0, n) is sorted by probability here: keep the smallest prefix reaching top_p.
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; ++i) {
      cum += scratch_[i].first / sum;
      if (cum >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
    sum = 0;
    for (int i = 0; i < n; ++i) sum += scratch_[i].first;
  }
  const double r = rng_.uniform_double() * sum;
  double cum = 0;
  for (int i = 0; i < n; ++i) {
    cum += scratch_[i].first;
    if (r < cum) return scratch_[i].second;
  }
  return scratch_[n - 1].second;
}

}  // namespace chainlm
