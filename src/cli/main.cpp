// chainlm: train, grow, tune, evaluate and serve Chain-of-Model and PHD language models.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"chainlm: Chain-of-Model (CoLM, CoLM-Air) and PHD-Transformer language models on CPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "chainlm 0.1.0");
  chainlm::cli::add_tokenizer_command(app);
  chainlm::cli::add_prepare_command(app);
  chainlm::cli::add_train_command(app);
  chainlm::cli::add_generate_command(app);
  chainlm::cli::add_bench_command(app);
  chainlm::cli::add_expand_command(app);
  chainlm::cli::add_export_command(app);
  chainlm::cli::add_info_command(app);
  chainlm::cli::add_serve_command(app);
  chainlm::cli::add_eval_command(app);
  chainlm::cli::add_plot_command(app);
  chainlm::cli::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const chainlm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
