#pragma once
// A training run's metrics log (RUN/metrics.jsonl, written by the trainer): one JSON object
// per optimizer step ("step", "loss", "chain_loss", "lr", "tokens_per_s", "step_ms", "tokens") and per
// validation ("step", "val_loss": one entry per sub-model), per set of sample generations
// ("step", "sample_prompt", "samples": [{"chains", "text", "tokens"}]), plus a step-0 header
// with the parameter counts and the tokens of a step.
#include <string>
#include <utility>
#include <vector>

namespace chainlm {

struct TrainPoint {
  long step = 0;
  double loss = 0;                 // the weighted objective
  std::vector<double> chain_loss;  // per sub-model; NaN where the step did not compute it
  double lr = 0, tokens_per_s = 0, step_ms = 0;
};

struct ValPoint {
  long step = 0;
  std::vector<double> loss;  // per sub-model k = 1..n (index k-1)
};

struct SamplePoint {
  long step = 0;
  std::string prompt;
  std::vector<std::pair<int, std::string>> samples;  // (chains, generated text)
};

struct RunMetrics {
  std::string path;  // the metrics.jsonl read
  std::vector<TrainPoint> train;
  std::vector<ValPoint> val;
  std::vector<SamplePoint> samples;
  long total_params = -1, trainable_params = -1;  // -1 = not logged
  long tokens_per_step = -1;  // the global batch's tokens (header); -1 = not logged (before 2026-12)
  double flops_per_step = -1;  // model FLOPs of a step (header, model/training_flops.h); -1 = not logged
  int n_chains = 0;                               // the longest chain_loss / val_loss list seen
  long skipped_steps = 0;  // steps skipped for a non-finite loss or gradient (--on-nonfinite skip)
  // Where the run started or resumed, and the precision its steps ran in from there (the steps
  // after `step`): a resume may switch it. Empty for logs before 2026-12.
  std::vector<std::pair<long, std::string>> precision_from;
  // Resumes over other data than the steps before read (the "resumed" event's
  // data_changed_from): the step resumed from and the data's fingerprints before and after.
  struct DataChange {
    long step = 0;
    std::string from, to;
  };
  std::vector<DataChange> data_changes;
  // A last line left unfinished (no newline, not valid JSON: a writer killed mid-line, a full
  // disk), skipped: its 1-based number, 0 when there was none. Callers warn.
  int torn_last_line = 0;
  // Whether sub-model k (1-based) has a logged training loss.
  bool has_train_loss(int k) const;
};

// Parses the log's text; `where` and the 1-based line number start every error (invalid JSON,
// a line that is not an object, fields of the wrong type). Lines of other kinds are ignored, and
// so is a torn last line (RunMetrics::torn_last_line).
RunMetrics parse_run_metrics(const std::string& text, const std::string& where);
// Reads RUN_DIR/metrics.jsonl; throws when it is missing or logs no step at all.
RunMetrics read_run_metrics(const std::string& run_dir);
// Says on stderr that m's torn last line was skipped, when it had one.
void warn_torn_last_line(const RunMetrics& m);

// Mean of sub-model k's training loss over the last `window` steps that logged it, and the
// lowest such mean over any `window` consecutive logged steps (NaN when none logged it).
double final_train_loss(const RunMetrics& m, int k, int window);
double best_train_loss(const RunMetrics& m, int k, int window);

}  // namespace chainlm
