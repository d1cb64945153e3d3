#include "eval/loss_plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace chainlm {

namespace {

// Dark colour (validation) and a light version of it (training) per sub-model, cycling.
constexpr const char* kDark[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                 "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
constexpr const char* kLight[] = {"#a5c8e1", "#ffc999", "#abdaab", "#eea9a9",
                                  "#d4c4e4", "#d1bbb7", "#f4c6e6", "#cbcbcb"};

// A gnuplot single-quoted string: no escapes inside, a quote is written twice.
std::string gp_quote(const std::string& s) {
  std::string r = "'";
  for (char ch : s) r += ch == '\'' ? std::string("''") : std::string(1, ch);
  return r + "'";
}

std::string shell_quote(const std::string& s) {
  std::string r = "'";
  for (char ch : s) r += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return r + "'";
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Removes a file when it goes out of scope.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& tag) {
    const std::string dir = temp_directory();
    std::string pattern = (std::filesystem::path(dir) / ("chainlm-" + tag + "-XXXXXX")).string();
    const int fd = mkstemp(pattern.data());
    CHAINLM_CHECK(fd >= 0, "cannot create a temporary file in ", dir, ": ", std::strerror(errno),
                  " (TMPDIR names where temporary files go)");
    ::close(fd);
    path = pattern;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

namespace {

// The terminal, output, title and axes every plot shares.
void write_preamble(std::ostringstream& s, const std::string& what, const std::string& png_path,
                    const PlotOptions& o) {
  CHAINLM_CHECK(o.width >= 64 && o.width <= 10000 && o.height >= 64 && o.height <= 10000,
                "plot size ", o.width, "x", o.height, " is outside 64..10000 pixels");
  const bool y_range = !std::isnan(o.y_min) || !std::isnan(o.y_max);
  CHAINLM_CHECK(!y_range || (std::isfinite(o.y_min) && std::isfinite(o.y_max) && o.y_min < o.y_max),
                "plot: the loss range ", o.y_min, ":", o.y_max, " needs two finite numbers, the first below the second");
  s << "# chainlm plot: loss curves of " << what << "\n";
  s << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    << "  set terminal pngcairo size " << o.width << "," << o.height
    << " noenhanced font 'sans,10'\n"
    << "} else {\n"
    << "  set terminal png size " << o.width << "," << o.height << " noenhanced\n"
    << "}\n";
  s << "set output " << gp_quote(png_path) << "\n";
  s << "set title " << gp_quote(o.title.empty() ? "loss curves" : o.title) << "\n";
  s << "set xlabel '" << (o.x == PlotX::kTokens ? "tokens" : o.x == PlotX::kFlops ? "training FLOPs" : "step")
    << "'\nset ylabel 'loss (nats/token)'\n";
  if (o.x != PlotX::kSteps) s << "set format x '%.1s%c'\n";  // 1.5M, 2.0G rather than 1.5e+06
  if (y_range) s << "set yrange [" << num(o.y_min) << ":" << num(o.y_max) << "]\n";
  s << "set grid\nset key top right box opaque\nset border 3\nset tics nomirror\n";
}

// Where a step goes on the x axis.
double x_of(const RunMetrics& m, long step, const PlotOptions& o) {
  return o.x == PlotX::kTokens  ? (double)step * (double)m.tokens_per_step
         : o.x == PlotX::kFlops ? (double)step * m.flops_per_step
                                : (double)step;
}

// Datablocks and plot clauses of sub-model k of m: training (thin, light) and validation
// (thick, dark) when logged, x_offset added to every x. Returns how many curves it added.
int add_sub_model(std::ostringstream& s, std::vector<std::string>& plots, const RunMetrics& m, int k,
                  const std::string& id, const std::string& label, int colour, const PlotOptions& o,
                  double x_offset = 0.0) {
  int added = 0;
  if (m.has_train_loss(k)) {
    s << "$train" << id << " << EOD\n";
    for (const TrainPoint& p : m.train)
      if (k - 1 < (int)p.chain_loss.size() && std::isfinite(p.chain_loss[k - 1]))
        s << num(x_offset + x_of(m, p.step, o)) << " " << num(p.chain_loss[k - 1]) << "\n";
    s << "EOD\n";
    plots.push_back(cat("$train", id, " using 1:2 with lines lw 1 lc rgb '", kLight[colour], "' title ",
                        gp_quote(label + " train")));
    ++added;
  }
  bool any_val = false;
  for (const ValPoint& v : m.val) any_val |= k - 1 < (int)v.loss.size() && std::isfinite(v.loss[k - 1]);
  if (any_val) {
    s << "$val" << id << " << EOD\n";
    for (const ValPoint& v : m.val)
      if (k - 1 < (int)v.loss.size() && std::isfinite(v.loss[k - 1]))
        s << num(x_offset + x_of(m, v.step, o)) << " " << num(v.loss[k - 1]) << "\n";
    s << "EOD\n";
    plots.push_back(cat("$val", id, " using 1:2 with linespoints lw 2.5 pt 7 ps 0.9 lc rgb '", kDark[colour],
                        "' title ", gp_quote(label + " val")));
    ++added;
  }
  return added;
}

std::string finish(std::ostringstream& s, const std::vector<std::string>& plots) {
  s << "plot ";
  for (size_t i = 0; i < plots.size(); ++i) s << (i ? ", \\\n     " : "") << plots[i];
  s << "\nunset output\n";
  return s.str();
}

void check_x_logged(const RunMetrics& m, const PlotOptions& o) {
  CHAINLM_CHECK(o.x != PlotX::kTokens || m.tokens_per_step > 0, m.path,
                ": logs no tokens per step (a run from before 2026-12); plot it against steps (--x steps)");
  CHAINLM_CHECK(o.x != PlotX::kFlops || m.flops_per_step > 0, m.path,
                ": logs no FLOPs per step (a run from before 2026-12); plot it against steps (--x steps)");
}

}  // namespace

std::string loss_plot_script(const RunMetrics& m, const std::string& png_path, const PlotOptions& o) {
  check_x_logged(m, o);
  std::ostringstream s;
  write_preamble(s, m.path, png_path, o);
  std::vector<std::string> plots;
  for (int k = 1; k <= m.n_chains; ++k) add_sub_model(s, plots, m, k, cat(k), cat("k=", k), (k - 1) % 8, o);
  CHAINLM_CHECK(!plots.empty(), m.path, ": no finite training or validation loss to plot");
  return finish(s, plots);
}

std::string overlay_plot_script(const std::vector<OverlayRun>& runs, const std::string& png_path,
                                const PlotOptions& o) {
  CHAINLM_CHECK(!runs.empty(), "plot: no runs to overlay");
  std::ostringstream s;
  std::string what;
  for (const OverlayRun& r : runs) what += (what.empty() ? "" : ", ") + r.metrics.path;
  write_preamble(s, what, png_path, o);
  std::vector<std::string> plots;
  for (size_t r = 0; r < runs.size(); ++r) {
    const RunMetrics& m = runs[r].metrics;
    check_x_logged(m, o);
    CHAINLM_CHECK(runs[r].chains >= 0, "plot: --chains ", runs[r].chains, " is not a sub-model (1 or more)");
    const int k = runs[r].chains > 0 ? runs[r].chains : m.n_chains;
    CHAINLM_CHECK(k <= m.n_chains, m.path, " logs ", m.n_chains, " sub-model", m.n_chains == 1 ? "" : "s",
                  ", so it has no sub-model ", k, " to plot (--chains)");
    const std::string label =
        runs[r].chains > 0 || runs.size() == 1 ? cat(runs[r].label, " k=", k) : runs[r].label;
    CHAINLM_CHECK(add_sub_model(s, plots, m, k, cat("r", r), label, (int)(r % 8), o, runs[r].x_offset) > 0,
                  m.path, ": no finite training or validation loss of sub-model ", k, " to plot");
  }
  return finish(s, plots);
}

namespace {

const std::string kPngSignature("\x89PNG\r\n\x1a\n", 8);
// The tEXt chunk's data: keyword, NUL, text (PNG 1.2, 11.3.4.3).
const std::string kMark("Software\0chainlm", 16);

uint32_t read_be32(const std::string& s, size_t at) {
  return (uint32_t)(unsigned char)s[at] << 24 | (uint32_t)(unsigned char)s[at + 1] << 16 |
         (uint32_t)(unsigned char)s[at + 2] << 8 | (uint32_t)(unsigned char)s[at + 3];
}

void append_be32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s += (char)(v >> shift & 0xff);
}

}  // namespace

std::string with_chainlm_mark(const std::string& png) {
  // Signature, then IHDR (length 13): 8 + 4 + 4 + 13 + 4 bytes; the mark goes right after it.
  CHAINLM_CHECK(png.size() >= 33 && png.compare(0, 8, kPngSignature) == 0 &&
                    png.compare(12, 4, "IHDR") == 0 && read_be32(png, 8) == 13,
                "gnuplot's PNG does not start with its header (a bug)");
  std::string chunk;
  append_be32(chunk, (uint32_t)kMark.size());
  chunk += "tEXt" + kMark;
  append_be32(chunk, crc32_of(chunk.data() + 4, chunk.size() - 4));  // over type and data
  return png.substr(0, 33) + chunk + png.substr(33);
}

bool is_chainlm_plot(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(4096, '\0');  // the mark sits right after the header
  in.read(head.data(), (std::streamsize)head.size());
  head.resize((size_t)in.gcount());
  if (head.compare(0, 8, kPngSignature) != 0) return false;
  for (size_t at = 8; at + 8 <= head.size();) {
    const uint32_t length = read_be32(head, at);
    const std::string type = head.substr(at + 4, 4);
    if (type == "IDAT" || type == "IEND") return false;
    if (type == "tEXt" && head.compare(at + 8, kMark.size(), kMark) == 0 && length == kMark.size())
      return true;
    if (length > head.size()) return false;
    at += 12 + (size_t)length;
  }
  return false;
}

void render_loss_plot(const RunMetrics& m, const std::string& png_path, const PlotOptions& o) {
  // The script names a temporary PNG, renamed into place once gnuplot succeeded.
  render_plot_script(loss_plot_script(m, kPlotOutput, o), png_path);
}

void render_plot_script(const std::string& script_template, const std::string& png_path) {
  TempFile png("plot-png"), err("plot-err");
  std::string script = script_template;
  const std::string placeholder = gp_quote(kPlotOutput);
  const size_t at = script.find(placeholder);
  CHAINLM_CHECK(at != std::string::npos, "plot script without its output placeholder (a bug)");
  script.replace(at, placeholder.size(), gp_quote(png.path));
  const std::string cmd = "gnuplot 2>" + shell_quote(err.path);
  // gnuplot may exit before reading everything: a write error, not a SIGPIPE, must tell us.
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &old);
  std::FILE* pipe = ::popen(cmd.c_str(), "w");
  int status = -1;
  if (pipe) {
    std::fwrite(script.data(), 1, script.size(), pipe);
    status = ::pclose(pipe);
  }
  sigaction(SIGPIPE, &old, nullptr);
  CHAINLM_CHECK(pipe && status != -1, "cannot run gnuplot (popen failed)");
  CHAINLM_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 127),
                "gnuplot is not installed (or not on PATH); install the Debian package gnuplot-nox "
                "(make setup does)");
  std::string messages = read_file(err.path);
  while (!messages.empty() && (messages.back() == '\n' || messages.back() == ' '))
    messages.pop_back();
  CHAINLM_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gnuplot failed (exit status ",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, ") drawing ", png_path, ": ",
                messages);
  const std::string bytes = read_file(png.path);
  CHAINLM_CHECK(bytes.size() > 8 && bytes.compare(1, 3, "PNG") == 0, "gnuplot wrote no PNG for ",
                png_path, messages.empty() ? std::string() : ": " + messages);
  write_file_atomic(png_path, with_chainlm_mark(bytes));
}

}  // namespace chainlm
