#pragma once
// Loss curves of a training run as a PNG (chainlm plot), rendered by gnuplot run as a
// subprocess: one colour per sub-model k, its training loss as a thin light line and its
// validation loss as a thick line with points.
#include <limits>
#include <string>
#include <vector>

#include "eval/run_metrics.h"

namespace chainlm {

// The x axis: optimizer steps, tokens trained on, or the model FLOPs spent (runs log the
// last two since 2026-12).
enum class PlotX { kSteps, kTokens, kFlops };

struct PlotOptions {
  int width = 960, height = 600;  // pixels
  std::string title;              // empty = "loss curves"
  PlotX x = PlotX::kSteps;
  // The loss axis from y_min to y_max (both set, y_min < y_max), to see the ends of curves that
  // differ by hundredths; unset (NaN), gnuplot fits it to every point.
  double y_min = std::numeric_limits<double>::quiet_NaN(), y_max = std::numeric_limits<double>::quiet_NaN();
};

// The gnuplot script that draws m into png_path (the data inline as datablocks). Uses the
// pngcairo terminal when gnuplot has it, else png.
std::string loss_plot_script(const RunMetrics& m, const std::string& png_path,
                             const PlotOptions& o);

// One run of an overlay: which sub-model (0: its full model), its legend label, and where its
// curve starts on the x axis (0; or, for a run that continued another, such as a model tuned after
// chain expansion, what was spent before it: the base run's tokens or FLOPs).
struct OverlayRun {
  RunMetrics metrics;
  std::string label;
  int chains = 0;
  double x_offset = 0.0;
};

// Several runs overlaid for comparing them (the replication suite's pictures): one colour per
// run, its validation loss as a thick line with points and its training loss as a thin light
// line. Throws naming the run when it has no such sub-model or logs nothing for the x axis.
std::string overlay_plot_script(const std::vector<OverlayRun>& runs, const std::string& png_path,
                                const PlotOptions& o);

// Runs `gnuplot` (found on PATH) on loss_plot_script and writes the PNG atomically (a
// temporary file beside png_path, renamed when gnuplot succeeded). Throws naming the cause
// when gnuplot is missing (Debian package gnuplot-nox), fails (with its messages), or writes
// nothing.
void render_loss_plot(const RunMetrics& m, const std::string& png_path, const PlotOptions& o);
// The same for a script of the two above made with png_path = kPlotOutput (the PNG is drawn
// into a temporary file first).
inline constexpr const char* kPlotOutput = "@PNG@";
void render_plot_script(const std::string& script, const std::string& png_path);
// Whether path is a plot chainlm drew: a PNG with the text chunk "Software: chainlm" that
// render_plot_script adds. What plot and report may replace without --overwrite: an earlier
// plot, never another file, a user's own PNG included.
bool is_chainlm_plot(const std::string& path);
// png (gnuplot's bytes) with that text chunk after its header.
std::string with_chainlm_mark(const std::string& png);

}  // namespace chainlm
