#pragma once
// Loss curves of a training run as a PNG (chainlm plot), rendered by gnuplot run as a
// subprocess: one colour per sub-model k, its training loss as a thin light line and its
// validation loss as a thick line with points.
#include <string>

#include "eval/run_metrics.h"

namespace chainlm {

struct PlotOptions {
  int width = 960, height = 600;  // pixels
  std::string title;              // empty = "loss curves"
};

// The gnuplot script that draws m into png_path (the data inline as datablocks). Uses the
// pngcairo terminal when gnuplot has it, else png.
std::string loss_plot_script(const RunMetrics& m, const std::string& png_path,
                             const PlotOptions& o);

// Runs `gnuplot` (found on PATH) on loss_plot_script and writes the PNG atomically (a
// temporary file beside png_path, renamed when gnuplot succeeded). Throws naming the cause
// when gnuplot is missing (Debian package gnuplot-nox), fails (with its messages), or writes
// nothing.
void render_loss_plot(const RunMetrics& m, const std::string& png_path, const PlotOptions& o);

}  // namespace chainlm
