#pragma once
// Perplexity of every sub-model k on a token stream (chainlm eval ppl). One forward pass of
// the largest requested sub-model gives the loss of every smaller one (Model::evaluate: chain
// causality makes sub-model k's hidden states a prefix of the larger model's).
#include <vector>

#include "model/model.h"

namespace chainlm {

// One window of the stream: inputs tokens[start, start + length), targets
// tokens[start + 1, start + length]; rows before first_scored are context only.
struct EvalWindow {
  long start = 0;
  int length = 0;
  int first_scored = 0;
};

// Windows of at most seq_len inputs starting every `stride` tokens (1 <= stride <= seq_len)
// over a stream of n_tokens. Every token after the first is scored exactly once: the first
// window scores all its targets, each later one only the targets past the previous window
// (its last `stride`), so a scored token sees at least seq_len - stride tokens of context
// (all tokens before it, near the start). stride = seq_len gives non-overlapping windows.
// The last window may be shorter. Empty when n_tokens < 2.
std::vector<EvalWindow> plan_eval_windows(long n_tokens, int seq_len, int stride);

struct PerplexityOptions {
  int seq_len = 0;          // 0 = the model's max_seq_len
  int stride = 0;           // 0 = seq_len (non-overlapping windows)
  int batch_size = 0;       // windows per forward pass; 0 = about 1024 tokens' worth
  std::vector<int> chains;  // sub-models to report (ascending); empty = all
  // Seconds to time each sub-model alone for its tokens/s (at least one batch, at most all of
  // them). 0 = report the one joint pass's rate for every sub-model.
  double speed_seconds = 1.0;
};

struct ChainPerplexity {
  int k = 0;
  long params = 0;          // Model::num_params(k)
  double loss = 0;          // mean token loss, nats
  double ppl = 0;           // exp(loss)
  double bpb = -1;          // bits per byte: loss sum / (ln 2 * bytes); -1 = bytes unknown
  double tokens_per_s = 0;  // sub-model k's own forward
};

struct PerplexityResult {
  long tokens = 0;  // scored tokens (the stream's length - 1)
  long bytes = -1;
  int seq_len = 0, stride = 0, batch_size = 0;
  long windows = 0;
  int longest_window = 0;   // tokens of the longest window: below seq_len for a shorter text
  double seconds = 0;       // the joint pass that computed every loss
  double tokens_per_s = 0;  // of that pass
  std::vector<ChainPerplexity> chains;
};

// bytes: the UTF-8 bytes of text the stream stands for, or -1 when unknown. Throws when the
// stream has fewer than 2 tokens or holds ids outside the model's vocabulary.
PerplexityResult evaluate_perplexity(Model& model, const std::vector<int>& tokens, long bytes,
                                     const PerplexityOptions& options);

}  // namespace chainlm
