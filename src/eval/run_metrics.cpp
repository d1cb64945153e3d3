#include "eval/run_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/text_lines.h"
#include "io/atomic_file.h"

namespace chainlm {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double number(const nlohmann::json& j, const char* name, const std::string& where, int line) {
  if (!j.contains(name)) return kNaN;
  CHAINLM_CHECK(j[name].is_number(), where, ":", line, ": \"", name, "\" is ", j[name].type_name(),
                ", not a number");
  return j[name].get<double>();
}

// A list of per-sub-model losses; null entries (sub-models a step did not compute) are NaN.
std::vector<double> loss_list(const nlohmann::json& j, const char* name, const std::string& where,
                              int line) {
  CHAINLM_CHECK(j[name].is_array(), where, ":", line, ": \"", name, "\" is ", j[name].type_name(),
                ", not a list of losses");
  std::vector<double> v;
  for (const auto& x : j[name]) {
    CHAINLM_CHECK(x.is_number() || x.is_null(), where, ":", line, ": \"", name, "\" holds ",
                  x.type_name(), ", not a loss");
    v.push_back(x.is_null() ? kNaN : x.get<double>());
  }
  return v;
}

// Losses of sub-model k in step order, skipping steps that did not log it.
std::vector<double> train_series(const RunMetrics& m, int k) {
  std::vector<double> s;
  for (const TrainPoint& p : m.train) {
    double v = k - 1 < (int)p.chain_loss.size() ? p.chain_loss[k - 1] : kNaN;
    if (std::isfinite(v)) s.push_back(v);
  }
  return s;
}

}  // namespace

bool RunMetrics::has_train_loss(int k) const {
  for (const TrainPoint& p : train)
    if (k - 1 < (int)p.chain_loss.size() && std::isfinite(p.chain_loss[k - 1])) return true;
  return false;
}

RunMetrics parse_run_metrics(const std::string& text, const std::string& where) {
  RunMetrics m;
  m.path = where;
  const std::vector<std::string> lines = split_text_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    const int line = (int)i + 1;
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      const bool torn = i + 1 == lines.size() && !text.empty() && text.back() != '\n';
      if (torn) {
        m.torn_last_line = line;
        break;
      }
      fail(where, ":", line, ": not valid JSON (", e.what(), ")");
    }
    CHAINLM_CHECK(j.is_object(), where, ":", line, ": expected a JSON object, got ", j.type_name());
    CHAINLM_CHECK(j.contains("step") && j["step"].is_number_integer(), where, ":", line,
                  ": every line needs an integer \"step\"");
    const long step = j["step"].get<long>();
    if (j.contains("precision") && j["precision"].is_string())
      m.precision_from.emplace_back(step, j["precision"].get<std::string>());
    if (j.contains("data_changed_from") && j["data_changed_from"].is_string()) {
      const auto& to = j.contains("data_fingerprint") ? j["data_fingerprint"] : nlohmann::json();
      m.data_changes.push_back({step, j["data_changed_from"].get<std::string>(),
                                to.is_string() ? to.get<std::string>() : "unrecorded"});
    }
    if (j.contains("skipped_steps"))  // a running count: its last value (resumes carry it on)
      m.skipped_steps = (long)number(j, "skipped_steps", where, line);
    if (j.contains("total_params")) m.total_params = (long)number(j, "total_params", where, line);
    if (j.contains("trainable_params"))
      m.trainable_params = (long)number(j, "trainable_params", where, line);
    if (j.contains("tokens_per_step")) {
      m.tokens_per_step = (long)number(j, "tokens_per_step", where, line);
      CHAINLM_CHECK(m.tokens_per_step > 0, where, ":", line, ": \"tokens_per_step\" must be positive");
    }
    if (j.contains("flops_per_step")) {
      m.flops_per_step = number(j, "flops_per_step", where, line);
      CHAINLM_CHECK(m.flops_per_step > 0, where, ":", line, ": \"flops_per_step\" must be positive");
    }
    if (j.contains("val_loss")) {
      ValPoint v{step, loss_list(j, "val_loss", where, line)};
      m.n_chains = std::max(m.n_chains, (int)v.loss.size());
      m.val.push_back(std::move(v));
    }
    if (j.contains("samples")) {
      CHAINLM_CHECK(j["samples"].is_array(), where, ":", line, ": \"samples\" is ",
                    j["samples"].type_name(), ", not a list");
      SamplePoint s;
      s.step = step;
      s.prompt = j.value("sample_prompt", std::string());
      for (const auto& x : j["samples"]) {
        CHAINLM_CHECK(x.is_object() && x.contains("chains") && x["chains"].is_number_integer() &&
                          x.contains("text") && x["text"].is_string(),
                      where, ":", line, ": a sample needs an integer \"chains\" and a \"text\"");
        s.samples.emplace_back(x["chains"].get<int>(), x["text"].get<std::string>());
      }
      m.samples.push_back(std::move(s));
    }
    if (j.contains("loss")) {
      TrainPoint p;
      p.step = step;
      p.loss = number(j, "loss", where, line);
      p.lr = number(j, "lr", where, line);
      p.tokens_per_s = number(j, "tokens_per_s", where, line);
      p.step_ms = number(j, "step_ms", where, line);
      if (j.contains("chain_loss")) p.chain_loss = loss_list(j, "chain_loss", where, line);
      m.n_chains = std::max(m.n_chains, (int)p.chain_loss.size());
      m.train.push_back(std::move(p));
    }
  }
  // Logs without per-chain losses: the objective is the full model's loss.
  if (m.n_chains == 0) m.n_chains = 1;
  for (TrainPoint& p : m.train)
    if (p.chain_loss.empty()) {
      p.chain_loss.assign(m.n_chains, kNaN);
      p.chain_loss.back() = p.loss;
    }
  return m;
}

void warn_torn_last_line(const RunMetrics& m) {
  if (m.torn_last_line > 0)
    std::fprintf(stderr,
                 "warning: %s:%d: skipped an unfinished last line (a writer stopped mid-line)\n",
                 m.path.c_str(), m.torn_last_line);
}

RunMetrics read_run_metrics(const std::string& run_dir) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(run_dir) / "metrics.jsonl").string();
  std::error_code ec;
  CHAINLM_CHECK(fs::exists(run_dir, ec), run_dir,
                ": no such file or directory (expected a training run directory)");
  CHAINLM_CHECK(fs::is_directory(run_dir, ec), run_dir,
                ": not a directory (expected a training run directory)");
  CHAINLM_CHECK(fs::is_regular_file(path, ec), path, ": not found; is ", run_dir,
                " a run directory written by chainlm train?");
  RunMetrics m = parse_run_metrics(read_file(path), path);
  CHAINLM_CHECK(!m.train.empty() || !m.val.empty(), path,
                ": logs no training step or validation yet");
  return m;
}

double final_train_loss(const RunMetrics& m, int k, int window) {
  const std::vector<double> s = train_series(m, k);
  if (s.empty()) return kNaN;
  const size_t n = std::min<size_t>(std::max(window, 1), s.size());
  double sum = 0;
  for (size_t i = s.size() - n; i < s.size(); ++i) sum += s[i];
  return sum / n;
}

double best_train_loss(const RunMetrics& m, int k, int window) {
  const std::vector<double> s = train_series(m, k);
  if (s.empty()) return kNaN;
  const size_t n = std::min<size_t>(std::max(window, 1), s.size());
  double sum = 0, best = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < s.size(); ++i) {
    sum += s[i];
    if (i >= n) sum -= s[i - n];
    if (i + 1 >= n) best = std::min(best, sum / n);
  }
  return best;
}

}  // namespace chainlm
