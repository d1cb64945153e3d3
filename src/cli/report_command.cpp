// chainlm report: a training run as one markdown page (model, sub-models, settings, losses,
// throughput) with its loss plot beside it.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "eval/loss_plot.h"
#include "eval/run_metrics.h"
#include "eval/run_report.h"
#include "io/atomic_file.h"

namespace chainlm::cli {

void add_report_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("report", "A markdown summary of a training run, with its loss plot");
  struct Args {
    std::string run, out;
    bool no_plot = false, overwrite = false;
    PlotOptions plot;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("run", a->run, "Run directory (metrics.jsonl and checkpoints)")->required();
  cmd->add_option("--out", a->out,
                  "Markdown file to write; default RUN/report.md. The plot goes beside it "
                  "as <name>-loss.png");
  cmd->add_flag("--no-plot", a->no_plot, "Leave out the plot (no gnuplot needed)");
  cmd->add_flag("--overwrite", a->overwrite,
                "Replace --out (and its plot) even when it is not an earlier report (and PNG)");
  cmd->add_option("--width", a->plot.width, "Plot width in pixels")->capture_default_str();
  cmd->add_option("--height", a->plot.height, "Plot height in pixels")->capture_default_str();
  cmd->callback([a]() {
    namespace fs = std::filesystem;
    const RunMetrics m = read_run_metrics(a->run);
    warn_torn_last_line(m);
    const fs::path out = a->out.empty() ? fs::path(a->run) / "report.md" : fs::path(a->out);
    refuse_directory_output("report", "--out " + out.string(), out.string(), "report.md");
    const std::vector<std::string> inputs = {(fs::path(a->run) / "metrics.jsonl").string()};
    refuse_replacing_input("report", out.string(), inputs);
    // A report replaces an earlier report and its plot, never another file by accident (the
    // run's metrics.jsonl, a checkpoint's config.json, the user's notes, a symbolic link).
    CHAINLM_CHECK(a->overwrite || may_replace(out.string(), is_run_report_file), "report: --out ",
                  out.string(),
                  " exists and is not a chainlm report as chainlm wrote it (another file, or a ",
                  "report edited since); choose another file, or pass --overwrite to replace it ",
                  "(nothing was written)");
    const fs::path png = out.parent_path() / (out.stem().string() + "-loss.png");
    // The plot beside it: one chainlm drew (marked so). A user's own PNG of that name is never
    // replaced, not even where an earlier report linked its plot (the user may have put theirs
    // there since); a plot drawn before plots were marked asks for --overwrite once.
    if (!a->no_plot)
      refuse_directory_output("report", "its plot " + png.string(), png.string(), "loss.png");
    CHAINLM_CHECK(a->no_plot || a->overwrite || may_replace(png.string(), is_chainlm_plot),
                  "report: the plot would replace ", png.string(),
                  ", which is not a plot chainlm drew; choose ",
                  "another --out, pass --no-plot, or pass --overwrite (nothing was written)");
    OutputParentDirs out_dirs(out.string(), "report");  // kept once the report is written
    std::string link;
    if (!a->no_plot) {
      a->plot.title = "loss curves: " + fs::path(a->run).lexically_normal().filename().string();
      render_loss_plot(m, png.string(), a->plot);
      link = png.filename().string();
    }
    write_file_atomic(out.string(), run_report_markdown(a->run, m, link));
    out_dirs.keep();
    std::printf("wrote %s%s\n", out.string().c_str(),
                link.empty() ? "" : (" and " + (out.parent_path() / link).string()).c_str());
  });
}

}  // namespace chainlm::cli
