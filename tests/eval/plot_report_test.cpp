// `chainlm plot` and `chainlm report` on a run recorded by `chainlm train`: a PNG of the size
// asked for (read from its IHDR chunk), a markdown page with every sub-model, and clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "../train/train_test_util.h"
#include "cli/run_cli.h"
#include "core/error.h"
#include "eval/loss_plot.h"
#include "eval/run_metrics.h"
#include "model/config.h"
#include "model/training_flops.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

// Width and height from a PNG's IHDR chunk (signature, then length, "IHDR", width, height,
// big-endian); {-1, -1} when the bytes are not a PNG.
std::pair<long, long> png_size(const std::string& b) {
  static const std::string signature = "\x89PNG\r\n\x1a\n";
  if (b.size() < 24 || b.compare(0, 8, signature) != 0 || b.compare(12, 4, "IHDR") != 0)
    return {-1, -1};
  auto be32 = [&](size_t at) {
    long v = 0;
    for (size_t i = 0; i < 4; ++i) v = v << 8 | (unsigned char)b[at + i];
    return v;
  };
  return {be32(16), be32(20)};
}

class RecordedRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir = new TempDir();
    const std::string data = dir->file("data");
    std::string text;
    for (int i = 0; i < 200; ++i)
      text += "the loss goes down as the model reads " + std::to_string(i) + "\n";
    test::make_byte_data_dir(text, data, 0.2);
    write_bytes(dir->file("config.json"),
                R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 64,
                    "vocab_size": 258, "chains": [1, 1, 2], "kv_share": true, "max_seq_len": 32})");
    run = dir->file("run");
    auto r = run_chainlm(
        *dir, "train --config " + quote(dir->file("config.json")) + " --data " + quote(data) +
                  " --out " + quote(run) +
                  " --steps 12 --batch-size 2 --seq-len 16 --eval-every 4 --eval-windows 4"
                  " --chain-loss-weights 1,1,1 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    delete dir;
    dir = nullptr;
  }
  static TempDir* dir;
  static std::string run;
};
TempDir* RecordedRun::dir = nullptr;
std::string RecordedRun::run;

TEST_F(RecordedRun, PlotWritesAPngOfTheRequestedSize) {
  const std::string png = dir->file("curves.png");
  auto r = run_chainlm(*dir,
                       "plot " + quote(run) + " --out " + quote(png) + " --width 640 --height 400");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string bytes = read_bytes(png);
  EXPECT_GT(bytes.size(), 2000u);  // curves, legend and axes, not an empty canvas
  EXPECT_EQ(png_size(bytes), std::make_pair(640L, 400L));
  EXPECT_NE(r.out.find("12 steps, 3 validations, 3 sub-models"), std::string::npos) << r.out;
  // The default: RUN/loss.png at 960x600.
  auto d = run_chainlm(*dir, "plot " + quote(run));
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(png_size(read_bytes(run + "/loss.png")), std::make_pair(960L, 600L));
  // The mark that lets a later plot replace it: a tEXt chunk right after IHDR, whose CRC is
  // the one Python's zlib.crc32(b"tEXt" + b"Software\0chainlm") gives (0xb1895b41).
  EXPECT_EQ(bytes.substr(33, 28),
            std::string("\0\0\0\x10tEXtSoftware\0chainlm\xb1\x89\x5b\x41", 28));
  EXPECT_TRUE(is_chainlm_plot(png));
  write_bytes(png, bytes.substr(0, 33) + bytes.substr(61));  // gnuplot's PNG, unmarked
  EXPECT_FALSE(is_chainlm_plot(png));
}

TEST_F(RecordedRun, ReportHasEverySubModelAndEmbedsThePlot) {
  // out/ does not exist: report makes it, as quantize and export make their --out's directories.
  const std::string md_path = dir->file("out/summary.md");
  auto r = run_chainlm(*dir, "report " + quote(run) + " --out " + quote(md_path));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string md = read_bytes(md_path);
  EXPECT_NE(md.find("# Training report: run"), std::string::npos) << md;
  EXPECT_NE(md.find("![loss curves"), std::string::npos) << md;
  EXPECT_NE(md.find("(summary-loss.png)"), std::string::npos) << md;
  EXPECT_EQ(png_size(read_bytes(dir->file("out/summary-loss.png"))), std::make_pair(960L, 600L));
  EXPECT_NE(md.find("CoLM-Air: chains [1,1,2]"), std::string::npos) << md;
  EXPECT_NE(md.find("`step-00000012` (step 12 of 12)"), std::string::npos) << md;
  for (const char* row : {"\n| 1 | 8 |", "\n| 2 | 16 |", "\n| 3 | 32 |"})
    EXPECT_NE(md.find(row), std::string::npos) << row << "\n" << md;
  EXPECT_NE(md.find("| chain_loss_weights | [1.0,1.0,1.0] |"), std::string::npos) << md;
  EXPECT_NE(md.find("| tokens trained | 384 |"), std::string::npos) << md;  // 12 steps x 2 x 16
  // Each step's own rate (tokens per step over its step_ms), not the log's running average.
  std::vector<double> rates;
  for (const auto& j : test::read_metrics_lines(run))
    if (j.contains("step_ms")) rates.push_back(32 * 1e3 / j["step_ms"].get<double>());
  std::sort(rates.begin(), rates.end());
  ASSERT_EQ(rates.size(), 12u);
  const double median_rate = (rates[5] + rates[6]) / 2;
  const size_t at = md.find("| median tokens/s | ");
  ASSERT_NE(at, std::string::npos) << md;
  EXPECT_NEAR(std::stod(md.substr(at + 20)), median_rate, 1.0) << md;
  EXPECT_EQ(md.find("| nan"), std::string::npos) << md;
  // --no-plot needs no gnuplot and embeds no image.
  auto n = run_chainlm(*dir, "report " + quote(run) + " --no-plot");
  ASSERT_EQ(n.exit_code, 0) << n.err;
  EXPECT_EQ(read_bytes(run + "/report.md").find("!["), std::string::npos);
}

TEST_F(RecordedRun, ErrorsNameWhatIsMissing) {
  TempDir empty;
  auto no_metrics = run_chainlm(*dir, "plot " + quote(empty.path().string()));
  EXPECT_NE(no_metrics.exit_code, 0);
  EXPECT_NE(no_metrics.err.find("metrics.jsonl: not found"), std::string::npos) << no_metrics.err;
  write_bytes(empty.file("metrics.jsonl"),
              "{\"step\": 0, \"total_params\": 5}\n{\"step\": 1, \"loss\": [\n");
  auto bad = run_chainlm(*dir, "report " + quote(empty.path().string()));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("metrics.jsonl:2: not valid JSON"), std::string::npos) << bad.err;
  auto size = run_chainlm(*dir, "plot " + quote(run) + " --width 10");
  EXPECT_NE(size.exit_code, 0);
  EXPECT_NE(size.err.find("outside 64..10000"), std::string::npos) << size.err;
  // Without gnuplot on PATH: say which package provides it.
  const std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  setenv("PATH", "/nonexistent", 1);
  auto no_gnuplot = run_chainlm(*dir, "plot " + quote(run) + " --out " + quote(dir->file("x.png")));
  setenv("PATH", path.c_str(), 1);
  EXPECT_NE(no_gnuplot.exit_code, 0);
  EXPECT_NE(no_gnuplot.err.find("gnuplot-nox"), std::string::npos) << no_gnuplot.err;
  EXPECT_FALSE(std::filesystem::exists(dir->file("x.png")));
}

// The replication suite's pictures: several runs overlaid, against steps or tokens.
TEST_F(RecordedRun, SeveralRunsOverlaidAgainstTokens) {
  // The trainer logs the tokens of a step (the global batch: 2 x 16) and the running total.
  const RunMetrics m = read_run_metrics(run);
  EXPECT_EQ(m.tokens_per_step, 32);
  // And the model FLOPs of a step, as model/training_flops.h counts them for this model.
  const ModelConfig c = config_from_json(nlohmann::json::parse(read_bytes(dir->file("config.json"))), "config.json");
  EXPECT_DOUBLE_EQ(m.flops_per_step, training_flops_per_token(Model(c), 16, {1, 1, 1}) * 32);
  const std::string log = read_bytes(run + "/metrics.jsonl");
  EXPECT_NE(log.find("\"tokens\":384"), std::string::npos) << log;  // step 12

  // A second run, written by hand: a batch twice as large, one validation and one step.
  const std::string other = dir->file("other");
  std::filesystem::create_directories(other);
  std::string shifted;
  for (const std::string& line : {std::string("{\"step\": 0, \"tokens_per_step\": 64}"),
                                  std::string("{\"step\": 3, \"val_loss\": [2.5, 2.25, 2.0]}"),
                                  std::string("{\"step\": 6, \"loss\": 2.0, \"chain_loss\": [2.5, 2.25, 2.0], \"lr\": 0.1, "
                                              "\"tokens_per_s\": 1, \"step_ms\": 1}")})
    shifted += line + "\n";
  write_bytes(other + "/metrics.jsonl", shifted);

  // The script: one colour per run, the labels given, x = step x tokens per step.
  const RunMetrics wide = read_run_metrics(other);
  PlotOptions o;
  o.x = PlotX::kTokens;
  const std::string script = overlay_plot_script({{m, "base", 2}, {wide, "wide", 2}}, kPlotOutput, o);
  EXPECT_NE(script.find("set xlabel 'tokens'"), std::string::npos) << script;
  EXPECT_NE(script.find("title 'base k=2 val'"), std::string::npos) << script;
  EXPECT_NE(script.find("title 'wide k=2 train'"), std::string::npos) << script;
  EXPECT_NE(script.find("$valr1 << EOD\n192 2.25\nEOD"), std::string::npos) << script;  // step 3 x 64
  EXPECT_NE(script.find("$trainr1 << EOD\n384 2.25\nEOD"), std::string::npos) << script;
  EXPECT_NE(script.find("$valr0 << EOD\n128 "), std::string::npos) << script;  // step 4 x 32
  // One sub-model per run (a CoLM's sub-model beside a dense model of its size), and a run's curve
  // shifted along x (a tuned model after the run it was expanded from).
  const std::string per_run = overlay_plot_script({{m, "base", 3}, {wide, "wide", 1}}, kPlotOutput, o);
  EXPECT_NE(per_run.find("title 'base k=3 val'"), std::string::npos) << per_run;
  EXPECT_NE(per_run.find("title 'wide k=1 val'"), std::string::npos) << per_run;
  EXPECT_NE(per_run.find("$valr1 << EOD\n192 2.5\nEOD"), std::string::npos) << per_run;  // k=1 of "wide"
  const std::string shifted_x = overlay_plot_script({{m, "base", 3}, {wide, "wide", 1, 1000.0}}, kPlotOutput, o);
  EXPECT_NE(shifted_x.find("$valr1 << EOD\n1192 2.5\nEOD"), std::string::npos) << shifted_x;
  EXPECT_NE(shifted_x.find("$trainr1 << EOD\n1384 2.5\nEOD"), std::string::npos) << shifted_x;
  EXPECT_NE(shifted_x.find("$valr0 << EOD\n128 "), std::string::npos) << shifted_x;  // base: no shift
  // Sub-model 4 does not exist; a log from before tokens were logged cannot go on a token axis.
  EXPECT_THROW(overlay_plot_script({{m, "a", 4}, {wide, "b", 4}}, kPlotOutput, o), Error);
  RunMetrics old = m;
  old.tokens_per_step = -1;
  try {
    overlay_plot_script({{old, "old", 1}}, kPlotOutput, o);
    ADD_FAILURE() << "a run without tokens_per_step was plotted against tokens";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--x steps"), std::string::npos) << e.what();
  }

  // Against FLOPs: the recorded run logs them, the hand-written one does not.
  o.x = PlotX::kFlops;
  const std::string flops = overlay_plot_script({{m, "base", 3}}, kPlotOutput, o);
  EXPECT_NE(flops.find("set xlabel 'training FLOPs'"), std::string::npos) << flops;
  EXPECT_NE(flops.find("$valr0 << EOD\n" + std::to_string((long)(4 * m.flops_per_step)) + " "), std::string::npos)
      << flops;
  EXPECT_THROW(overlay_plot_script({{m, "a", 1}, {wide, "b", 1}}, kPlotOutput, o), Error);

  // The command: a PNG, and clear refusals.
  const std::string png = dir->file("overlay.png");
  auto r = run_chainlm(*dir, "plot " + quote(run) + " " + quote(other) + " --x tokens --chains 2 --label base "
                             "--label wide --out " + quote(png) + " --width 700 --height 500");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(png_size(read_bytes(png)), std::make_pair(700L, 500L));
  EXPECT_NE(r.out.find("2 runs, sub-model 2, against tokens"), std::string::npos) << r.out;
  auto no_out = run_chainlm(*dir, "plot " + quote(run) + " " + quote(other));
  EXPECT_NE(no_out.exit_code, 0);
  EXPECT_NE(no_out.err.find("--out is needed"), std::string::npos) << no_out.err;
  // A refused command names the option at fault and writes nothing.
  const std::string refused_png = dir->file("w.png");
  auto expect_refused = [&](const std::string& args, const std::string& needle) {
    auto r = run_chainlm(*dir, "plot " + args + " --out " + quote(refused_png));
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    EXPECT_FALSE(std::filesystem::exists(refused_png)) << args;
  };
  const std::string both = quote(run) + " " + quote(other);
  expect_refused(both + " --label one", "1 --label for 2 runs");
  // --chains per run; a list of the wrong length is refused.
  auto per_run_cli = run_chainlm(*dir, "plot " + both + " --chains 3,1 --out " + quote(dir->file("k.png")));
  ASSERT_EQ(per_run_cli.exit_code, 0) << per_run_cli.err;
  EXPECT_NE(per_run_cli.out.find("2 runs, sub-models 3,1, against steps"), std::string::npos) << per_run_cli.out;
  expect_refused(both + " --chains 3,1,2", "3 --chains for 2 runs");
  // Read by the rules of every number list (an empty item was skipped without a word).
  expect_refused(both + " --chains 3,,1", "--chains: '' is not an integer");
  expect_refused(both + " --chains 3,1,", "ends with a comma");
  expect_refused(both + " --chains 0", "0 is not a sub-model");
  auto spaced =
      run_chainlm(*dir, "plot " + both + " --chains '3 , 1' --out " + quote(dir->file("k2.png")));
  EXPECT_EQ(spaced.exit_code, 0) << spaced.err;
  // --x-offset per run, on an axis both runs log.
  expect_refused(both + " --x-offset 0,1e9 --x flops", "logs no FLOPs per step");  // the hand-written run
  auto offsets_ok = run_chainlm(*dir, "plot " + both + " --x-offset 0,500 --x tokens --out " + quote(dir->file("o.png")));
  ASSERT_EQ(offsets_ok.exit_code, 0) << offsets_ok.err;
  EXPECT_EQ(png_size(read_bytes(dir->file("o.png"))), std::make_pair(960L, 600L));
  for (const std::string bad : {"0", "0,-1", "0,nan"}) expect_refused(both + " --x-offset " + bad, "--x-offset");
  // --y-range: the loss axis, so curves that differ by hundredths can be told apart.
  PlotOptions zoom;
  zoom.y_min = 2.0;
  zoom.y_max = 2.5;
  EXPECT_NE(overlay_plot_script({{m, "base", 1}}, kPlotOutput, zoom).find("set yrange [2:2.5]\n"), std::string::npos);
  EXPECT_EQ(overlay_plot_script({{m, "base", 1}}, kPlotOutput, PlotOptions{}).find("yrange"), std::string::npos);
  auto zoomed = run_chainlm(
      *dir, "plot " + quote(run) + " --y-range 1.5:3 --out " + quote(dir->file("new/zoom.png")));
  ASSERT_EQ(zoomed.exit_code, 0) << zoomed.err;
  EXPECT_EQ(png_size(read_bytes(dir->file("new/zoom.png"))),
            std::make_pair(960L, 600L));  // new/ made
  auto roomy = run_chainlm(*dir, "plot " + quote(run) + " --y-range 0:100 --out " + quote(dir->file("wide.png")));
  EXPECT_EQ(roomy.exit_code, 0) << roomy.err;
  EXPECT_EQ(roomy.err.find("warning"), std::string::npos) << roomy.err;  // the losses are in it
  // A range that holds no loss drew empty axes without a word.
  auto empty = run_chainlm(
      *dir, "plot " + quote(run) + " --y-range 100:200 --out " + quote(dir->file("empty.png")));
  EXPECT_EQ(empty.exit_code, 0) << empty.err;
  EXPECT_NE(empty.err.find("no loss of the run falls inside --y-range 100:200"), std::string::npos)
      << empty.err;
  for (const std::string bad : {"3:1.5", "1.5", "a:b", "1.5:", ":3", "nan:3", "1:2:3"})
    expect_refused(quote(run) + " --y-range " + bad, "--y-range");
  expect_refused(quote(run) + " --y-range 3:1.5", "--y-range 3:1.5: LO must be below HI");
  // A late error (a size the plot cannot have) leaves no directory made for --out behind.
  for (const std::string& cmd :
       {"plot " + quote(run) + " --width 5 --out " + quote(dir->file("late/sub/p.png")),
        "report " + quote(run) + " --width 5 --out " + quote(dir->file("late/sub/r.md"))}) {
    auto late = run_chainlm(*dir, cmd);
    EXPECT_NE(late.exit_code, 0) << cmd;
    EXPECT_FALSE(std::filesystem::exists(dir->file("late"))) << cmd;
  }
}

}  // namespace
}  // namespace chainlm
