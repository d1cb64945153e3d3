#pragma once
// Small parsing helpers shared by the subcommands.
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace chainlm::cli {

// --threads N: sets the thread count (0: default_threads if positive, else OpenMP's default: every
// core, or OMP_NUM_THREADS when set) and warns when the count is more than the cores this process
// may run on (threads then wait for each other: a decode 5.8x slower, a training step 12x, eval's
// per-thread model copies 16x the memory, all without a word before). Under mpirun `train`
// warns itself, naming the binding.
void apply_threads_option(int threads, int default_threads = 0);
// Whether an output may be written at `path` without --overwrite: nothing is there, or a file
// (not a symbolic link, dangling or not: the output would replace the link) that `ours` says an
// earlier run of the command wrote (an earlier report, a plot chainlm drew).
bool may_replace(const std::string& path, const std::function<bool(const std::string&)>& ours);
// Refuses an output path that is a directory, which no --overwrite replaces (the write would fail
// at its rename, after the work): `what` names it ("--out d"), `example` a file name in it.
void refuse_directory_output(const std::string& command, const std::string& what,
                             const std::string& path, const std::string& example);
// Refuses an output that would replace what the work reads or keeps, --overwrite or not: one of
// `inputs` (the corpus a tokenizer is trained on; the run's metrics.jsonl a report or plot
// reads: a plot written over it lost the run's log and its resume), or a file a training run,
// a checkpoint or a data directory holds (`latest`, weights, shards, their tokenizer).
void refuse_replacing_input(const std::string& command, const std::string& out,
                            const std::vector<std::string>& inputs);
// The missing directories of an output file's path, made (as quantize and export make theirs)
// and removed again, if still empty, unless keep() was called: a command stopped by a late error
// leaves no empty directory behind.
class OutputParentDirs {
 public:
  OutputParentDirs(const std::string& file, const std::string& command);
  ~OutputParentDirs();
  OutputParentDirs(const OutputParentDirs&) = delete;
  OutputParentDirs& operator=(const OutputParentDirs&) = delete;
  void keep() { made_.clear(); }

 private:
  void remove_made();
  std::vector<std::string> made_;  // outermost first
};
// "1,0.5,2" -> {1, 0.5, 2}; `what` names the option in errors.
// The options given on a parsed command line, as "--lr 0.005 --out runs/a" (in the order the
// command declares them), leaving out those named in `except`.
std::string given_options(const CLI::App& cmd, const std::vector<std::string>& except);

std::vector<float> parse_float_list(const std::string& s, const std::string& what);
// An integer option's lower bound, refused as "--x: must be at least 1 (got 0)" (CLI11's own
// PositiveNumber names a range up to a 300-digit number).
CLI::Validator at_least(long long min);
// A whole number in [min, max]: "'abc' is not a whole number", "must be in 1..65536 (got 0)"
// (CLI::Range said "Value abc not in range 1 to 65536" of a word).
CLI::Validator whole_number_in(long long min, long long max);
// A --seed: a whole number in 0..18446744073709551615 (CLI11 turned -1 and 1e20's digits into
// 2^64 - 1 silently, so two different mistakes gave one seed).
CLI::Validator seed_value();
// A number an fp32 option holds: 1e39 became inf, and the error then named "--lr inf".
CLI::Validator in_float_range();
// "8" or "4,4" -> {4, 4}, the same way.
std::vector<int> parse_int_list(const std::string& s, const std::string& what);
nlohmann::json read_json_file(const std::string& path);
// --precision fp32|bf16 (docs/precision.md); CLI11 refuses other values, naming both.
CLI::Option* add_precision_option(CLI::App* cmd, std::string& value, const std::string& help);
// --kv-cache auto|f32|f16 (docs/inference.md, "KV cache"); CLI11 refuses other values.
CLI::Option* add_kv_cache_option(CLI::App* cmd, std::string& value);
// --stream-interval-ms for serve and bench serve (ServeOptions::stream_interval_ms).
CLI::Option* add_stream_interval_option(CLI::App* cmd, int& value);

}  // namespace chainlm::cli
