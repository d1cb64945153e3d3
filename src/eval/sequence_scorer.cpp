#include "eval/sequence_scorer.h"

#include <omp.h>

#include <algorithm>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "core/threads.h"

namespace chainlm {

int max_scored_sequence_tokens(const Model& model) {
  return model.config().max_seq_len + 1;
}

namespace {

int padded_length(int inputs, int max_len) {
  return std::min(max_len, (inputs + 7) / 8 * 8);
}

// Above this many bytes of parameters, sequences run one after another on the one model
// instead of on per-thread copies.
constexpr size_t kMaxReplicaBytes = size_t(1) << 30;

}  // namespace

std::vector<std::vector<double>> score_sequences(Model& model,
                                                 const std::vector<ScoringRequest>& requests,
                                                 int k_max) {
  const ModelConfig& c = model.config();
  CHAINLM_CHECK(k_max >= 1 && k_max <= c.n_chains(), "sub-model k = ", k_max, " is outside 1..",
                c.n_chains());
  for (size_t i = 0; i < requests.size(); ++i) {
    const ScoringRequest& q = requests[i];
    const int len = (int)q.tokens.size();
    CHAINLM_CHECK(q.first_scored >= 1 && q.first_scored < len, "scoring request ", i, ": ", len,
                  " tokens with the first scored at ", q.first_scored, " scores nothing");
    CHAINLM_CHECK(
        len <= max_scored_sequence_tokens(model), "scoring request ", i, ": ", len,
        " tokens exceed the model's max_seq_len + 1 = ", max_scored_sequence_tokens(model));
    for (int id : q.tokens)
      CHAINLM_CHECK(id >= 0 && id < c.vocab_size, "scoring request ", i, ": token ", id,
                    " is outside the model's vocabulary (", c.vocab_size, ")");
  }
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return requests[a].tokens.size() < requests[b].tokens.size();
  });

  // Sequences are short: one thread per sequence beats splitting a few rows' GEMMs over the
  // cores. Each extra thread gets its own copy of the model (Model::evaluate uses the
  // model's activation buffers); the kernels inside the parallel region run single-threaded.
  const size_t param_bytes = model.weight_bytes();
  int threads = std::min<int>(num_threads(), (int)(requests.size() / 4));
  if (param_bytes > kMaxReplicaBytes) threads = 1;
  std::vector<std::unique_ptr<Model>> replicas;
  for (int t = 1; t < threads; ++t) {
    replicas.push_back(std::make_unique<Model>(c));
    replicas.back()->copy_weights_from(model);
  }
  std::vector<std::vector<double>> out(requests.size());
  std::string first_error;
#pragma omp parallel num_threads(std::max(threads, 1))
  {
    Model& m = omp_get_thread_num() == 0 ? model : *replicas[omp_get_thread_num() - 1];
    std::vector<int> tokens, targets;
#pragma omp for schedule(dynamic, 4)
    for (size_t o = 0; o < order.size(); ++o) {
      const size_t i = order[o];
      const ScoringRequest& q = requests[i];
      const int inputs = (int)q.tokens.size() - 1;
      const int T = padded_length(inputs, c.max_seq_len);
      tokens.assign(T, 0);  // padding after the sequence: causal attention never lets it back
      targets.assign(T, -1);
      for (int t = 0; t < inputs; ++t) {
        tokens[t] = q.tokens[t];
        if (t + 1 >= q.first_scored) targets[t] = q.tokens[t + 1];
      }
      try {
        std::vector<double> nll = m.evaluate(tokens.data(), targets.data(), 1, T, k_max, nullptr);
        out[i].resize(k_max);
        for (int k = 0; k < k_max; ++k) out[i][k] = -nll[k];
      } catch (const std::exception& e) {
        // Exceptions must not leave an OpenMP region; keep the first and rethrow after it.
#pragma omp critical
        if (first_error.empty()) first_error = e.what();
      }
    }
  }
  if (!first_error.empty()) throw Error(first_error);
  return out;
}

}  // namespace chainlm
