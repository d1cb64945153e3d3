#pragma once
// Each subcommand lives in its own file and registers itself on the root app.
// Callbacks throw chainlm::Error on bad input; main() prints it and exits non-zero.
#include <CLI/CLI.hpp>

namespace chainlm::cli {

void add_tokenizer_command(CLI::App& app);
void add_prepare_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_expand_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_report_command(CLI::App& app);

}  // namespace chainlm::cli
