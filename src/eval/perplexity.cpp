#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/timer.h"
#include "model/memory_estimate.h"

namespace chainlm {

std::vector<EvalWindow> plan_eval_windows(long n_tokens, int seq_len, int stride) {
  CHAINLM_CHECK(seq_len >= 1, "evaluation window length ", seq_len, " must be >= 1");
  CHAINLM_CHECK(stride >= 1 && stride <= seq_len, "stride ", stride, " must be in 1..", seq_len,
                " (the window length)");
  std::vector<EvalWindow> windows;
  long scored_until = 0;  // targets 1..scored_until are scored already
  for (long start = 0; scored_until < n_tokens - 1; start += stride) {
    const long end = std::min(start + seq_len, n_tokens - 1);  // the window's last target
    windows.push_back({start, (int)(end - start), (int)(scored_until - start)});
    scored_until = end;
  }
  return windows;
}

namespace {

// run_batch runs the (up to) B windows from `first` as one (rows, T) batch through
// sub-models 1..k_max, adds their loss sums to sums[k-1] and returns the scored targets.
struct BatchRunner {
  Model& model;
  const std::vector<int>& stream;
  const std::vector<EvalWindow>& windows;
  int T, B;
  std::vector<int> tokens, targets;

  long run_batch(size_t first, int k_max, std::vector<double>& sums) {
    const int rows = (int)std::min<size_t>(B, windows.size() - first);
    tokens.assign((size_t)rows * T, 0);  // padding: any valid id, never a scored target
    targets.assign((size_t)rows * T, -1);
    for (int r = 0; r < rows; ++r) {
      const EvalWindow& w = windows[first + r];
      for (int t = 0; t < w.length; ++t) {
        tokens[(size_t)r * T + t] = stream[w.start + t];
        if (t >= w.first_scored) targets[(size_t)r * T + t] = stream[w.start + t + 1];
      }
    }
    long n = 0;
    std::vector<double> s = model.evaluate(tokens.data(), targets.data(), rows, T, k_max, &n);
    for (int i = 0; i < k_max; ++i) sums[i] += s[i];
    return n;
  }
};

}  // namespace

PerplexityResult evaluate_perplexity(Model& model, const std::vector<int>& stream, long bytes,
                                     const PerplexityOptions& o) {
  const ModelConfig& c = model.config();
  const int n = c.n_chains();
  CHAINLM_CHECK(stream.size() >= 2, "the evaluation text holds ", stream.size(),
                " tokens; need at least 2 (one to predict from, one to predict)");
  for (size_t i = 0; i < stream.size(); ++i)
    CHAINLM_CHECK(stream[i] >= 0 && stream[i] < c.vocab_size, "token ", stream[i], " at position ",
                  i, " of the evaluation text is outside the model's vocabulary (", c.vocab_size,
                  "); was it made with another tokenizer?");
  std::vector<int> ks = o.chains;
  if (ks.empty())
    for (int k = 1; k <= n; ++k) ks.push_back(k);
  for (int k : ks) CHAINLM_CHECK(k >= 1 && k <= n, "sub-model k = ", k, " is outside 1..", n);
  CHAINLM_CHECK(std::is_sorted(ks.begin(), ks.end()),
                "sub-models must be listed in ascending order");
  const int k_max = ks.back();

  // 0 means "the default" for each; below 0 is a mistake (it ran with the default).
  CHAINLM_CHECK(o.seq_len >= 0, "--seq-len ", o.seq_len,
                " must be >= 0 (0 = the model's max_seq_len)");
  CHAINLM_CHECK(o.stride >= 0, "--stride ", o.stride, " must be >= 0 (0 = --seq-len)");
  CHAINLM_CHECK(o.batch_size >= 0, "--batch-size ", o.batch_size,
                " must be >= 0 (0 = about 1024 tokens)");
  PerplexityResult r;
  r.seq_len = o.seq_len > 0 ? o.seq_len : c.max_seq_len;
  CHAINLM_CHECK(r.seq_len <= c.max_seq_len, "--seq-len ", r.seq_len,
                " exceeds the model's max_seq_len ", c.max_seq_len);
  r.stride = o.stride > 0 ? o.stride : r.seq_len;
  const std::vector<EvalWindow> windows =
      plan_eval_windows((long)stream.size(), r.seq_len, r.stride);
  const int T = windows[0].length;  // the longest window; shorter ones are padded
  r.batch_size = o.batch_size > 0 ? o.batch_size : std::max(1, 1024 / T);
  r.windows = (long)windows.size();
  r.longest_window = T;
  // A pass's activations grow with its windows: checked before they are allocated, naming the
  // option (a user trial's --batch-size 92 ran out of memory under `ulimit -v`, and the message
  // sent them to the model's estimate, not to the batch).
  const int rows = (int)std::min<long>(r.batch_size, r.windows);
  MemoryEstimate need;
  need.parts.push_back({cat("the activations of ", rows, " window", rows == 1 ? "" : "s", " of ", T,
                            " tokens a pass"),
                        Model::activation_floats(c, rows, T, true) * sizeof(float)});
  check_memory_fits("eval ppl", need, 1, 0,
                    rows > 1 ? "lower --batch-size (0 = about 1024 tokens a pass) or --seq-len"
                             : "lower --seq-len (a pass of one window is the smallest there is)",
                    0, false);
  r.bytes = bytes;
  BatchRunner runner{model, stream, windows, T, r.batch_size, {}, {}};

  std::vector<double> sums(k_max, 0.0);
  Timer timer;
  for (size_t w = 0; w < windows.size(); w += r.batch_size)
    r.tokens += runner.run_batch(w, k_max, sums);
  r.seconds = timer.seconds();
  r.tokens_per_s = r.tokens / std::max(r.seconds, 1e-9);

  for (int k : ks) {
    ChainPerplexity cp;
    cp.k = k;
    cp.params = model.num_params(k);
    cp.loss = sums[k - 1] / r.tokens;
    // A NaN printed as a result and exit 0 read as a figure: the model's weights are what is wrong.
    CHAINLM_CHECK(
        std::isfinite(cp.loss), "sub-model k=", k, "'s loss is not finite (", cp.loss,
        "): the model computes NaN or infinite logits (a weight holds NaN or a value near float's "
        "range: a corrupt file, or a run that diverged)");
    cp.ppl = std::exp(cp.loss);
    if (bytes > 0) cp.bpb = sums[k - 1] / (std::log(2.0) * bytes);
    cp.tokens_per_s = r.tokens_per_s;
    if (o.speed_seconds > 0 && ks.size() > 1) {
      // Sub-model k alone (its forward with k chains and heads 1..k, which cost one head of
      // width D_1 + .. + D_k), over the first batches: buffers are already allocated.
      std::vector<double> scratch(k, 0.0);
      long timed_tokens = 0;
      Timer t;
      for (size_t w = 0; w < windows.size() && (w == 0 || t.seconds() < o.speed_seconds);
           w += r.batch_size)
        timed_tokens += runner.run_batch(w, k, scratch);
      cp.tokens_per_s = timed_tokens / std::max(t.seconds(), 1e-9);
    }
    r.chains.push_back(cp);
  }
  return r;
}

}  // namespace chainlm
