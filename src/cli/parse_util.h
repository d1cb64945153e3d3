#pragma once
// Small parsing helpers shared by the subcommands.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace chainlm::cli {

// "1,0.5,2" -> {1, 0.5, 2}; `what` names the option in errors.
std::vector<float> parse_float_list(const std::string& s, const std::string& what);
nlohmann::json read_json_file(const std::string& path);

}  // namespace chainlm::cli
