// chainlm plot: a training run's loss curves as a PNG (gnuplot), one colour per sub-model,
// training and validation.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "eval/loss_plot.h"
#include "eval/run_metrics.h"

namespace chainlm::cli {

namespace {

bool is_png_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == 8 && std::string(magic, 8) == std::string("\x89PNG\r\n\x1a\n", 8);
}

}  // namespace

void add_plot_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot", "Loss curves of a training run as a PNG (needs gnuplot)");
  struct Args {
    std::string run, out;
    PlotOptions plot;
    bool overwrite = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("run", a->run, "Run directory (holds metrics.jsonl)")->required();
  cmd->add_option("--out", a->out, "PNG file to write; default RUN/loss.png");
  cmd->add_option("--width", a->plot.width, "Width in pixels")->capture_default_str();
  cmd->add_option("--height", a->plot.height, "Height in pixels")->capture_default_str();
  cmd->add_option("--title", a->plot.title, "Title; default the run directory's name");
  cmd->add_flag("--overwrite", a->overwrite, "Replace --out even when it is not a PNG");
  cmd->callback([a]() {
    const RunMetrics m = read_run_metrics(a->run);
    const std::string out =
        a->out.empty() ? (std::filesystem::path(a->run) / "loss.png").string() : a->out;
    // A plot replaces an earlier plot (a PNG), never another file by accident.
    CHAINLM_CHECK(a->overwrite || !std::filesystem::exists(out) || is_png_file(out), "plot: --out ",
                  out, " exists and is not a PNG image; choose another file, or pass --overwrite ",
                  "to replace it (nothing was written)");
    if (a->plot.title.empty())
      a->plot.title =
          "loss curves: " + std::filesystem::path(a->run).lexically_normal().filename().string();
    render_loss_plot(m, out, a->plot);
    std::printf("wrote %s (%dx%d): %zu steps, %zu validations, %d sub-models\n", out.c_str(),
                a->plot.width, a->plot.height, m.train.size(), m.val.size(), m.n_chains);
  });
}

}  // namespace chainlm::cli
