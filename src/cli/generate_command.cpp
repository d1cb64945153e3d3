#include "cli/commands.h"

namespace chainlm::cli {

void add_generate_command(CLI::App& app) { (void)app; }  // placeholder until the command lands

}  // namespace chainlm::cli
