#include "eval/loss_plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

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
    std::string pattern =
        (std::filesystem::temp_directory_path() / ("chainlm-" + tag + "-XXXXXX")).string();
    const int fd = mkstemp(pattern.data());
    CHAINLM_CHECK(fd >= 0, "cannot create a temporary file in ",
                  std::filesystem::temp_directory_path().string());
    ::close(fd);
    path = pattern;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

std::string loss_plot_script(const RunMetrics& m, const std::string& png_path,
                             const PlotOptions& o) {
  CHAINLM_CHECK(o.width >= 64 && o.width <= 10000 && o.height >= 64 && o.height <= 10000,
                "plot size ", o.width, "x", o.height, " is outside 64..10000 pixels");
  std::ostringstream s;
  s << "# chainlm plot: loss curves of " << m.path << "\n";
  s << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    << "  set terminal pngcairo size " << o.width << "," << o.height
    << " noenhanced font 'sans,10'\n"
    << "} else {\n"
    << "  set terminal png size " << o.width << "," << o.height << " noenhanced\n"
    << "}\n";
  s << "set output " << gp_quote(png_path) << "\n";
  s << "set title " << gp_quote(o.title.empty() ? "loss curves" : o.title) << "\n";
  s << "set xlabel 'step'\nset ylabel 'loss (nats/token)'\n";
  s << "set grid\nset key top right box opaque\nset border 3\nset tics nomirror\n";
  std::vector<std::string> plots;
  for (int k = 1; k <= m.n_chains; ++k) {
    const int c = (k - 1) % 8;
    if (m.has_train_loss(k)) {
      s << "$train" << k << " << EOD\n";
      for (const TrainPoint& p : m.train)
        if (k - 1 < (int)p.chain_loss.size() && std::isfinite(p.chain_loss[k - 1]))
          s << p.step << " " << num(p.chain_loss[k - 1]) << "\n";
      s << "EOD\n";
      plots.push_back(cat("$train", k, " using 1:2 with lines lw 1 lc rgb '", kLight[c],
                          "' title 'k=", k, " train'"));
    }
    bool any_val = false;
    for (const ValPoint& v : m.val)
      any_val |= k - 1 < (int)v.loss.size() && std::isfinite(v.loss[k - 1]);
    if (any_val) {
      s << "$val" << k << " << EOD\n";
      for (const ValPoint& v : m.val)
        if (k - 1 < (int)v.loss.size() && std::isfinite(v.loss[k - 1]))
          s << v.step << " " << num(v.loss[k - 1]) << "\n";
      s << "EOD\n";
      plots.push_back(cat("$val", k, " using 1:2 with linespoints lw 2.5 pt 7 ps 0.9 lc rgb '",
                          kDark[c], "' title 'k=", k, " val'"));
    }
  }
  CHAINLM_CHECK(!plots.empty(), m.path, ": no finite training or validation loss to plot");
  s << "plot ";
  for (size_t i = 0; i < plots.size(); ++i) s << (i ? ", \\\n     " : "") << plots[i];
  s << "\nunset output\n";
  return s.str();
}

void render_loss_plot(const RunMetrics& m, const std::string& png_path, const PlotOptions& o) {
  TempFile png("plot-png"), err("plot-err");
  const std::string script = loss_plot_script(m, png.path, o);
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
  write_file_atomic(png_path, bytes);
}

}  // namespace chainlm
