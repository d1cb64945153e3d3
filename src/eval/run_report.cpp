#include "eval/run_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/number_format.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/model.h"

namespace chainlm {

namespace fs = std::filesystem;

namespace {

// The report's first line begins with this: how an earlier report is told from another file.
constexpr const char* kReportTitle = "# Training report: ";
constexpr const char* kMarkerStart = "chainlm report crc32 ";

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string model_kind(const ModelConfig& c) {
  std::string kind = c.kv_share ? "CoLM-Air" : c.n_chains() > 1 ? "CoLM" : "LLaMA (one chain)";
  if (c.phd.enabled()) kind += ", " + c.phd.name();
  return kind;
}

std::string json_value(const nlohmann::json& v) {
  if (v.is_string())
    return v.get<std::string>().empty() ? "\"\"" : "`" + v.get<std::string>() + "`";
  if (v.is_number_float()) {
    std::ostringstream os;
    os << (float)v.get<double>();  // the options are floats: show 0.002, not 0.0020000000949949026
    return os.str();
  }
  return v.dump();
}

// The loss a sub-model reached and when: the last validation, and the best one.
struct ValSummary {
  double last = std::nan(""), best = std::nan("");
  long best_step = -1;
};

ValSummary val_summary(const RunMetrics& m, int k) {
  ValSummary s;
  for (const ValPoint& v : m.val) {
    if (k - 1 >= (int)v.loss.size() || !std::isfinite(v.loss[k - 1])) continue;
    s.last = v.loss[k - 1];
    if (s.best_step < 0 || s.last < s.best) {
      s.best = s.last;
      s.best_step = v.step;
    }
  }
  return s;
}

}  // namespace

std::string run_report_markdown(const std::string& run_dir, const RunMetrics& m,
                                const std::string& plot_link) {
  std::ostringstream md;
  const std::string name = fs::path(run_dir).lexically_normal().filename().string();
  md << kReportTitle << (name.empty() ? run_dir : name) << "\n\n";

  // The latest checkpoint, if the run has written one.
  std::string ckpt, ckpt_error;
  try {
    ckpt = resolve_checkpoint_dir(run_dir);
  } catch (const Error& e) {
    ckpt_error = e.what();
  }
  std::unique_ptr<Model> model;
  nlohmann::json config_json, state;
  if (!ckpt.empty()) {
    const std::string config_path = (fs::path(ckpt) / "config.json").string();
    config_json = nlohmann::json::parse(read_file(config_path), nullptr, false);
    CHAINLM_CHECK(!config_json.is_discarded(), config_path, ": not valid JSON");
    model = std::make_unique<Model>(config_from_json(config_json, config_path));
    const fs::path state_path = fs::path(ckpt) / "trainer_state.json";
    std::error_code ec;
    if (fs::is_regular_file(state_path, ec)) {
      state = nlohmann::json::parse(read_file(state_path.string()), nullptr, false);
      CHAINLM_CHECK(!state.is_discarded() && state.is_object(), state_path.string(),
                    ": not a valid trainer state");
    }
  }

  md << "| | |\n|---|---|\n";
  md << "| run directory | `" << run_dir << "` |\n";
  md << "| metrics | `" << m.path << "`: " << m.train.size() << " steps, " << m.val.size()
     << " validations logged |\n";
  // A diverged run's skipped steps and non-finite validations read as missing figures before.
  if (m.skipped_steps > 0)
    md << "| skipped | " << m.skipped_steps
       << " step(s) with a non-finite loss or gradient (--on-nonfinite skip), not in the steps "
          "above |\n";
  std::vector<long> nonfinite_val;
  for (const ValPoint& v : m.val)
    if (std::any_of(v.loss.begin(), v.loss.end(), [](double x) { return !std::isfinite(x); }))
      nonfinite_val.push_back(v.step);
  if (!nonfinite_val.empty()) {
    md << "| not finite | the validation loss at step";
    for (size_t i = 0; i < nonfinite_val.size() && i < 10; ++i)
      md << (i ? ", " : " ") << nonfinite_val[i];
    md << (nonfinite_val.size() > 10 ? ", ..." : "")
       << " (the weights overflow in the forward pass: the run diverged) |\n";
  }
  if (model) {
    const ModelConfig& c = model->config();
    md << "| checkpoint | `" << fs::path(ckpt).filename().string() << "`";
    if (state.contains("step") && state.contains("options") && state["options"].contains("steps"))
      md << " (step " << state["step"].dump() << " of " << state["options"]["steps"].dump() << ")";
    md << " |\n";
    md << "| model | " << model_kind(c) << ": chains " << nlohmann::json(c.chains).dump()
       << ", dim " << c.dim << ", " << c.n_layers << " layers, " << c.n_heads << " heads ("
       << c.n_kv_heads << " KV), ffn " << c.ffn_dim << ", vocab " << c.vocab_size
       << ", max_seq_len " << c.max_seq_len << " |\n";
    md << "| parameters | " << thousands(model->num_params(c.n_chains())) << " (full model) |\n";
  } else {
    md << "| checkpoint | none yet (" << ckpt_error << ") |\n";
  }
  if (m.trainable_params >= 0 && m.total_params >= 0 && m.trainable_params != m.total_params)
    md << "| trainable | " << thousands(m.trainable_params) << " of " << thousands(m.total_params)
       << " parameters |\n";
  md << "\n";
  if (!plot_link.empty())
    md << "![loss curves: training (light) and validation (dark) per sub-model](" << plot_link
       << ")\n\n";

  // Per sub-model figures.
  const int n = model ? model->config().n_chains() : m.n_chains;
  md << "## Sub-models\n\n";
  md << "Training loss: mean over the last " << kReportTrainWindow
     << " logged steps (final) and the lowest mean over any " << kReportTrainWindow
     << " consecutive steps (best); \"—\" where training did not compute that sub-model's "
     << "loss (its chain-loss weight was 0). Validation loss: at the last validation (\"nan\" "
        "where it was not finite), and the lowest with its step. "
     << "Losses in nats per token.\n\n";
  md << "| k | width | parameters | train loss (final) | train loss (best) | val loss (last) | val "
        "ppl (last) | val loss (best) | at step |\n";
  md << "|---|---|---|---|---|---|---|---|---|\n";
  for (int k = 1; k <= n; ++k) {
    const ValSummary v = val_summary(m, k);
    const bool last_nan = !m.val.empty() && k <= (int)m.val.back().loss.size() &&
                          !std::isfinite(m.val.back().loss[k - 1]);
    auto last = [&](double x, int digits) {
      return last_nan ? std::string("nan") : fixed(x, digits);
    };
    md << "| " << k << " | " << (model ? std::to_string(model->layout().dim.prefix(k)) : "—")
       << " | " << (model ? short_count(model->num_params(k)) : "—") << " | "
       << fixed(final_train_loss(m, k, kReportTrainWindow), 4) << " | "
       << fixed(best_train_loss(m, k, kReportTrainWindow), 4) << " | " << last(v.last, 4) << " | "
       << last(std::exp(v.last), 2) << " | " << fixed(v.best, 4) << " | "
       << (v.best_step >= 0 ? std::to_string(v.best_step) : "—") << " |\n";
  }
  md << "\n";

  // The last sample generations (train --sample-every), the first and the last set: how the
  // text changed over the run.
  if (!m.samples.empty()) {
    md << "## Samples\n\nGreedy continuations (in brackets) of the prompt (`train "
          "--sample-every`), at the first and the last step sampled.\n\n";
    const std::vector<const SamplePoint*> shown =
        m.samples.size() == 1
            ? std::vector<const SamplePoint*>{&m.samples.front()}
            : std::vector<const SamplePoint*>{&m.samples.front(), &m.samples.back()};
    // One line per sample in a code block; newlines shown as \n so each stays on its line.
    const auto one_line = [](const std::string& text) {
      std::string out;
      for (char ch : text) out += ch == '\n' ? "\\n" : ch == '\t' ? "\\t" : std::string(1, ch);
      return out;
    };
    for (const SamplePoint* s : shown) {
      md << "Step " << s->step << ":\n\n```text\n";
      for (const auto& [k, text] : s->samples)
        md << "k=" << k << " | " << one_line(s->prompt) << "[" << one_line(text) << "]\n";
      md << "```\n\n";
    }
  }

  // Training settings.
  md << "## Training\n\n";
  if (state.contains("options") && state["options"].is_object()) {
    const nlohmann::json& o = state["options"];
    md << "| setting | value |\n|---|---|\n";
    for (const auto& [key, value] : o.items())
      md << "| " << key << " | " << json_value(value) << " |\n";
    if (o.contains("batch_size") && o.contains("seq_len") && o["batch_size"].is_number() &&
        o["seq_len"].is_number()) {
      long seq = o["seq_len"].get<long>();
      if (seq <= 0 && model) seq = model->config().max_seq_len;
      const long per_step = o["batch_size"].get<long>() * seq;
      md << "| tokens per step | " << thousands(per_step) << " |\n";
      if (!m.train.empty())
        md << "| tokens trained | " << thousands(per_step * m.train.back().step) << " |\n";
    }
    // The options hold the last segment's precision: a run resumed in another one says which
    // steps ran in which. Segments in one precision are merged; steps before the first record
    // (a run started before 2026-12, resumed since) are "unrecorded".
    std::vector<std::pair<long, std::string>> runs;
    if (!m.precision_from.empty() && m.precision_from[0].first > 0)
      runs.emplace_back(0, "unrecorded");
    for (const auto& seg : m.precision_from)
      if (runs.empty() || runs.back().second != seg.second) runs.push_back(seg);
    if (runs.size() > 1 && !m.train.empty()) {
      md << "| precision by steps | ";
      const char* sep = "";
      for (size_t i = 0; i < runs.size(); ++i) {
        const long first = runs[i].first + 1;
        const long last = i + 1 < runs.size() ? runs[i + 1].first : m.train.back().step;
        if (last < first) continue;
        md << sep << runs[i].second << " (steps " << first << "-" << last << ")";
        sep = ", ";
      }
      md << " |\n";
    }
  } else {
    md << "No trainer state in the checkpoint.\n";
  }
  md << "\n";
  // A resume over other data (on purpose or not) changes what the losses after it mean.
  for (const auto& d : m.data_changes)
    md << "**Data changed on resume:** the steps from " << d.step + 1 << " on read other data (`"
       << d.to << "`; the steps before read `" << d.from << "`).\n\n";

  // Throughput over the logged steps.
  md << "## Throughput\n\n";
  std::vector<double> tok_s, step_ms;
  double total_ms = 0;
  for (const TrainPoint& p : m.train) {
    // Each step's own rate: the log's tokens_per_s averages over the steps since the run (or its
    // resume) began, and the median of those read ~10% below the median step time's rate.
    if (m.tokens_per_step > 0 && std::isfinite(p.step_ms) && p.step_ms > 0)
      tok_s.push_back((double)m.tokens_per_step * 1e3 / p.step_ms);
    else if (std::isfinite(p.tokens_per_s))
      tok_s.push_back(p.tokens_per_s);
    if (std::isfinite(p.step_ms)) {
      step_ms.push_back(p.step_ms);
      total_ms += p.step_ms;
    }
  }
  md << "| | |\n|---|---|\n";
  md << "| median tokens/s | " << fixed(median(tok_s), 0) << " |\n";
  md << "| median step time | " << fixed(median(step_ms), 1) << " ms |\n";
  md << "| training time (sum of step times, validation excluded) | " << fixed(total_ms / 1e3, 1)
     << " s |\n\n";

  if (!config_json.is_null())
    md << "## config.json\n\n```json\n" << config_json.dump(2) << "\n```\n";
  // The report's own checksum, so that `report` replaces it only as it wrote it: notes a user
  // added to it were lost without a word when the report was made again.
  const std::string body = md.str();
  return body + report_marker(body);
}

std::string report_marker(const std::string& body) {
  return cat("\n<!-- ", kMarkerStart, crc32_hex(crc32_of(body.data(), body.size())),
             " (chainlm report replaces this file only while it is as written) -->\n");
}

bool is_run_report_file(const std::string& path) {
  // Its title, and the whole file against its marker (reports are a few KB; anything far larger
  // is not one, and is not read).
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec || size > (16u << 20)) return false;
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {  // unreadable: not one report may replace
    return false;
  }
  if (text.rfind(kReportTitle, 0) != 0) return false;
  const size_t at = text.rfind(cat("\n<!-- ", kMarkerStart));
  return at != std::string::npos && text.substr(at) == report_marker(text.substr(0, at));
}

}  // namespace chainlm
