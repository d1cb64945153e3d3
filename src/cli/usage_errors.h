#pragma once
// The one line a command line chainlm cannot parse gets: what CLI11 found wrong, said in the
// user's terms. CLI11 reports a missing required option before an unknown one (`generate
// --modle M` said "--model is required", never naming the typo), lists unexpected arguments
// in reverse ("5 --max-token"), and calls an unknown command of a group ("eval perplexity")
// "A subcommand is required". This names the unknown command or option first, with the
// nearest known name when one is close.
#include <CLI/CLI.hpp>
#include <string>

namespace chainlm::cli {

// The message (without "error: "), given the app after a failed parse and the exception.
std::string describe_usage_error(const CLI::App& app, const CLI::ParseError& e);

// The known name nearest to `given` by edit distance, "" when none is close (at most a third
// of the name's letters differ): "--max-token" -> "--max-tokens", "perplexity" -> "".
std::string nearest_name(const std::string& given, const std::vector<std::string>& known);

}  // namespace chainlm::cli
