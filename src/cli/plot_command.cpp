// chainlm plot: loss curves as a PNG (gnuplot): one run's sub-models, one colour each, or
// several runs overlaid (one colour per run), against steps or tokens; training and validation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/number_format.h"
#include "eval/loss_plot.h"
#include "eval/run_metrics.h"

namespace chainlm::cli {

void add_plot_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "plot", "Loss curves as a PNG (needs gnuplot): every sub-model of one run, or several runs overlaid");
  struct Args {
    std::vector<std::string> runs, labels;
    std::string out, x = "steps";
    std::vector<int> chains;
    std::vector<double> x_offsets;
    std::string y_range;  // LO:HI (a list option read as "FLOAT ..." in the help)
    std::string chains_list, x_offset_list;  // as given: read by parse_int_list / parse_float_list
    PlotOptions plot;
    bool overwrite = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("runs", a->runs, "Run directories (each holds metrics.jsonl)")->required();
  cmd->add_option("--out", a->out, "PNG file to write; default RUN/loss.png for one run (needed for several)");
  cmd->add_option("--x", a->x, "x axis: steps, tokens trained on, or training FLOPs (model FLOPs)")
      ->check(CLI::IsMember({"steps", "tokens", "flops"}))
      ->capture_default_str();
  cmd->add_option(
         "--chains", a->chains_list,
         "Plot sub-model k of every run, or one k per run in order, e.g. 2,2,1 (default: every "
         "sub-model of one run, each run's full model when several)")
      ->allow_extra_args(false);  // `--chains 2 RUN...`: the runs are not k values
  cmd->add_option(
         "--x-offset", a->x_offset_list,
         "Where each run's curve starts on the x axis, one value per run in order (e.g. the FLOPs "
         "of the run a tuned model was expanded from); default 0")
      ->allow_extra_args(false);
  cmd->add_option("--label", a->labels, "Legend label of each run, in order (default: the directory names)");
  cmd->add_option("--width", a->plot.width, "Width in pixels")->capture_default_str();
  cmd->add_option("--height", a->plot.height, "Height in pixels")->capture_default_str();
  cmd->add_option("--title", a->plot.title, "Title; default the run directory's name");
  cmd->add_option("--y-range", a->y_range,
                  "Loss axis LO:HI, e.g. 3.8:4.4, to tell apart the ends of curves that differ by "
                  "hundredths "
                  "(default: fitted to every point)")
      ->type_name("LO:HI")
      ->allow_extra_args(false);
  cmd->add_flag("--overwrite", a->overwrite, "Replace --out even when it is not a PNG");
  cmd->callback([a]() {
    namespace fs = std::filesystem;
    const bool several = a->runs.size() > 1;
    // The number lists of every other option's rules: spaces around items, no empty item.
    if (!a->chains_list.empty()) a->chains = parse_int_list(a->chains_list, "plot: --chains");
    for (int k : a->chains)
      CHAINLM_CHECK(k >= 1, "plot: --chains: ", k, " is not a sub-model (1 or more)");
    if (!a->x_offset_list.empty())
      for (float x : parse_float_list(a->x_offset_list, "plot: --x-offset"))
        a->x_offsets.push_back(x);
    CHAINLM_CHECK(!several || !a->out.empty(), "plot: --out is needed to overlay several runs (nothing was written)");
    CHAINLM_CHECK(a->labels.empty() || a->labels.size() == a->runs.size(), "plot: ", a->labels.size(),
                  " --label for ", a->runs.size(), " runs; give one per run, in order");
    CHAINLM_CHECK(a->chains.size() <= 1 || a->chains.size() == a->runs.size(), "plot: ", a->chains.size(),
                  " --chains for ", a->runs.size(), " runs; give one for every run, or one per run in order");
    CHAINLM_CHECK(a->x_offsets.empty() || a->x_offsets.size() == a->runs.size(), "plot: ",
                  a->x_offsets.size(), " --x-offset for ", a->runs.size(), " runs; give one per run, in order");
    for (double x : a->x_offsets)
      CHAINLM_CHECK(std::isfinite(x) && x >= 0, "plot: --x-offset ", x, " must be a finite number >= 0");
    std::vector<RunMetrics> runs;
    std::vector<std::string> labels = a->labels;
    for (const std::string& r : a->runs) {
      runs.push_back(read_run_metrics(r));
      warn_torn_last_line(runs.back());
      if (a->labels.empty()) labels.push_back(fs::path(r).lexically_normal().filename().string());
    }
    const std::string out = a->out.empty() ? (fs::path(a->runs[0]) / "loss.png").string() : a->out;
    refuse_directory_output("plot", "--out " + out, out, "loss.png");
    std::vector<std::string> inputs;
    for (const std::string& r : a->runs) inputs.push_back((fs::path(r) / "metrics.jsonl").string());
    refuse_replacing_input("plot", out, inputs);
    // A plot replaces an earlier plot, never another file by accident (a symbolic link too).
    CHAINLM_CHECK(
        a->overwrite || may_replace(out, is_chainlm_plot), "plot: --out ", out,
        " exists and is not a plot chainlm drew (its PNGs carry the text 'Software: chainlm'); ",
        "choose another file, or pass --overwrite to replace it (nothing was written)");
    a->plot.x = a->x == "tokens" ? PlotX::kTokens : a->x == "flops" ? PlotX::kFlops : PlotX::kSteps;
    if (!a->y_range.empty()) {
      std::vector<double> y;
      for (size_t at = 0; at <= a->y_range.size();) {
        const size_t colon = std::min(a->y_range.find(':', at), a->y_range.size());
        const std::string part = a->y_range.substr(at, colon - at);
        char* end = nullptr;
        const double v = std::strtod(part.c_str(), &end);
        y.push_back(part.empty() || *end ? std::nan("") : v);
        at = colon + 1;
      }
      CHAINLM_CHECK(y.size() == 2 && std::isfinite(y[0]) && std::isfinite(y[1]), "plot: --y-range ",
                    a->y_range, ": takes LO:HI, two finite numbers (nothing was written)");
      CHAINLM_CHECK(y[0] < y[1], "plot: --y-range ", y[0], ":", y[1],
                    ": LO must be below HI (nothing was written)");
      a->plot.y_min = y[0];
      a->plot.y_max = y[1];
      // A range that holds no loss draws empty axes: said, not left to be found in the picture.
      bool any = false;
      for (const RunMetrics& m : runs) {
        for (const TrainPoint& p : m.train)
          for (double v : p.chain_loss) any = any || (v >= y[0] && v <= y[1]);
        for (const ValPoint& p : m.val)
          for (double v : p.loss) any = any || (v >= y[0] && v <= y[1]);
      }
      if (!any)
        std::fprintf(stderr,
                     "warning: no loss of the run%s falls inside --y-range %g:%g; the plot's axes "
                     "will be empty\n",
                     runs.size() > 1 ? "s" : "", y[0], y[1]);
    }
    OutputParentDirs out_dirs(out, "plot");  // kept once the plot is written
    if (a->plot.title.empty())
      a->plot.title = several ? "loss curves" : "loss curves: " + labels[0];
    if (!several && a->chains.empty() && a->x_offsets.empty()) {
      render_loss_plot(runs[0], out, a->plot);
      out_dirs.keep();
      std::printf("wrote %s (%dx%d): %s, %s, %s\n", out.c_str(), a->plot.width, a->plot.height,
                  count_of((long)runs[0].train.size(), "step").c_str(),
                  count_of((long)runs[0].val.size(), "validation").c_str(),
                  count_of(runs[0].n_chains, "sub-model").c_str());
      return;
    }
    std::vector<OverlayRun> overlay;
    for (size_t r = 0; r < runs.size(); ++r)
      overlay.push_back({runs[r], labels[r], a->chains.empty() ? 0 : a->chains[a->chains.size() == 1 ? 0 : r],
                         a->x_offsets.empty() ? 0.0 : a->x_offsets[r]});
    render_plot_script(overlay_plot_script(overlay, kPlotOutput, a->plot), out);
    out_dirs.keep();
    std::string which = "each run's full model";
    if (!a->chains.empty()) {
      which = a->chains.size() == 1 ? "sub-model" : "sub-models";
      for (size_t i = 0; i < a->chains.size(); ++i) which += (i ? "," : " ") + std::to_string(a->chains[i]);
    }
    std::printf("wrote %s (%dx%d): %s, %s, against %s\n", out.c_str(), a->plot.width,
                a->plot.height, count_of((long)runs.size(), "run").c_str(), which.c_str(),
                a->x.c_str());
  });
}

}  // namespace chainlm::cli
