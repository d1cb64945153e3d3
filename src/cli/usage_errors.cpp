#include "cli/usage_errors.h"

#include <algorithm>
#include <filesystem>
#include <vector>

namespace chainlm::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "chainlm eval ppl": the command line's commands, down to the innermost one parsed.
const CLI::App* innermost(const CLI::App& app, std::string& path) {
  const CLI::App* at = &app;
  path = "chainlm";
  while (!at->get_subcommands().empty()) {
    at = at->get_subcommands().back();
    path += " " + at->get_name();
  }
  return at;
}

std::vector<std::string> command_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  return names;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::vector<std::string> option_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* opt : app.get_options()) {
    for (const std::string& n : opt->get_lnames()) names.push_back("--" + n);
    for (const std::string& n : opt->get_snames()) names.push_back("-" + n);
  }
  return names;
}

std::string did_you_mean(const std::string& given, const std::vector<std::string>& known) {
  if (given.size() <= 2) return "";  // "-v": any one-letter flag is as near
  const std::string near = nearest_name(given, known);
  return near.empty() ? std::string() : " (did you mean " + near + "?)";
}

}  // namespace

std::string nearest_name(const std::string& given, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = std::max<size_t>(1, given.size() / 3) + 1;
  for (const std::string& k : known)
    if (const size_t d = edit_distance(given, k); d < best_distance) {
      best = k;
      best_distance = d;
    }
  return best;
}

std::string describe_usage_error(const CLI::App& app, const CLI::ParseError& e) {
  std::string path;
  const CLI::App* at = innermost(app, path);
  const std::string help = " (options: " + path + " --help)";
  const std::vector<std::string> rest = app.remaining(true);
  const bool needs_command = at->get_require_subcommand_min() > 0;
  // What the parse could not place comes first: a required option reported missing was often
  // given misspelled.
  const auto option = std::find_if(
      rest.begin(), rest.end(), [](const std::string& a) { return a.size() > 1 && a[0] == '-'; });
  if (needs_command && !rest.empty() && rest[0][0] != '-') {
    const std::vector<std::string> commands = command_names(*at);
    const std::string group =
        at == &app ? std::string() : path.substr(std::string("chainlm ").size()) + " ";
    return "unknown command '" + group + rest[0] + "'" + did_you_mean(rest[0], commands) +
           "; the " + (at == &app ? "" : at->get_name() + " ") + "commands are " +
           joined(commands) + " (" + path + " --help)";
  }
  if (option != rest.end()) {
    const std::string name = option->substr(0, option->find('='));
    return "unknown option '" + name + "' for '" + path + "'" +
           did_you_mean(name, option_names(*at)) + help;
  }
  if (!rest.empty()) {
    // A path given bare (`chainlm generate MODEL`, llama.cpp and HF habits): the options that
    // take one.
    std::error_code ec;
    const auto names = option_names(*at);
    std::vector<std::string> takes;
    for (const char* n : {"--model", "--data", "--input", "--config", "--corpus", "--out"})
      if (std::find(names.begin(), names.end(), n) != names.end()) takes.push_back(n);
    return "unexpected argument '" + rest[0] + "' for '" + path + "'" +
           (!takes.empty() && std::filesystem::exists(rest[0], ec)
                ? "; files are given with their option (" + joined(takes) + ")"
                : "") +
           help;
  }
  if (needs_command)
    return "'" + path + "' needs a command: " + joined(command_names(*at)) + " (" + path +
           " --help)";
  std::string message = e.what();
  // An option given twice: CLI11 says "--x: At Most 1 required but received 2", which names
  // neither the repetition nor the values.
  static const std::string kAtMostOne = ": At Most 1 required but received ";
  if (const size_t at_most = message.find(kAtMostOne); at_most != std::string::npos) {
    const std::string name = message.substr(0, at_most);
    const CLI::Option* opt = at->get_option_no_throw(name);
    std::string values;
    // (An API key is not repeated onto a terminal or a log.)
    if (opt && name.find("key") == std::string::npos)
      for (const std::string& v : opt->results()) values += (values.empty() ? "" : ", ") + v;
    return name + " was given " + message.substr(at_most + kAtMostOne.size()) + " times" +
           (values.empty() ? std::string() : " (" + values + ")") + "; give it once" + help;
  }
  // A value of the wrong type: CLI11 says "Could not convert: --x = v", which says neither what
  // the option takes nor, for an integer past its type's range, that the number is the trouble.
  static const std::string kConvert = "Could not convert: ";
  if (message.rfind(kConvert, 0) == 0) {
    const std::string rest = message.substr(kConvert.size());
    const size_t eq = rest.find(" = ");
    if (eq != std::string::npos) {
      const std::string name = rest.substr(0, eq), value = rest.substr(eq + 3);
      const CLI::Option* opt = at->get_option_no_throw(name);
      // (A validator adds its description after the type: "FLOAT:...".)
      const std::string type = opt ? opt->get_type_name() : std::string();
      auto is = [&](const char* t) { return type.rfind(t, 0) == 0; };
      if (is("INT") || is("UINT")) {
        const bool digits =
            !value.empty() &&
            value.find_first_not_of("0123456789", value[0] == '-' || value[0] == '+') ==
                std::string::npos &&
            value.size() > (value[0] == '-' || value[0] == '+');
        return name + ": '" + value + "' " +
               (digits ? "is out of range for this option" : "is not a whole number") + help;
      }
      if (is("FLOAT")) return name + ": '" + value + "' is not a number" + help;
      return name + ": '" + value + "' is not a value this option takes" + help;
    }
  }
  for (char& ch : message)
    if (ch == '\n') ch = ' ';
  while (!message.empty() && message.back() == ' ') message.pop_back();
  return message + help;
}

}  // namespace chainlm::cli
