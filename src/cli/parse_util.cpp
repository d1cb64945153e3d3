#include "cli/parse_util.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "core/error.h"
#include "core/json_document.h"
#include "core/text_list.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/run_path.h"
#include "io/tokenizer.h"
#include "train/distributed.h"

namespace chainlm::cli {

namespace {

// "a,b,c" -> {convert(a), convert(b), convert(c)}; convert(item, &used) is std::stof or std::stoi,
// and an item it does not read whole is "not <kind>".
template <typename T, typename Convert>
std::vector<T> parse_list(const std::string& s, const std::string& what, const char* kind,
                          Convert convert) {
  std::vector<T> out;
  for (const std::string& item : split_list(s, what)) {
    try {
      size_t used = 0;
      out.push_back(convert(item, &used));
      CHAINLM_CHECK(used == item.size(), what, ": '", item, "' is not ", kind);
    } catch (const std::out_of_range&) {
      // One, only past the type's range (it was called "not an integer").
      fail(what, ": '", item, "' is out of range for ", kind);
    } catch (const std::logic_error&) {
      fail(what, ": '", item, "' is not ", kind);
    }
  }
  CHAINLM_CHECK(!out.empty(), what, ": empty list");
  return out;
}

}  // namespace

std::vector<float> parse_float_list(const std::string& s, const std::string& what) {
  return parse_list<float>(s, what, "a number", [](const std::string& x, size_t* used) {
    // std::stof reads hexadecimal floats too: "0x1" as 1 (a typo of "0.1" read as ten times it).
    if (x.find_first_of("xX") != std::string::npos) throw std::invalid_argument(x);
    return std::stof(x, used);
  });
}

std::vector<int> parse_int_list(const std::string& s, const std::string& what) {
  return parse_list<int>(s, what, "an integer",
                         [](const std::string& x, size_t* used) { return std::stoi(x, used); });
}

void apply_threads_option(int threads, int default_threads) {
  CHAINLM_CHECK(threads >= 0, "--threads ", threads, ": give a positive count, or 0 for all cores");
  set_num_threads(threads > 0 ? threads : default_threads);
  const int cores = cores_available(), used = num_threads();
  if (used <= cores || launched_by_mpi()) return;
  const char* env = std::getenv("OMP_NUM_THREADS");
  const std::string source = threads > 0 ? cat("--threads ", threads)
                             : env       ? cat("OMP_NUM_THREADS=", env)
                                         : std::string("the default thread count");
  std::fprintf(
      stderr,
      "warning: %s is more than the %d core%s this process may use: the threads will wait for "
      "each other; give --threads %d or fewer\n",
      source.c_str(), cores, cores == 1 ? "" : "s", cores);
}

bool may_replace(const std::string& path, const std::function<bool(const std::string&)>& ours) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(path, ec);
  return !fs::exists(status) || (!fs::is_symlink(status) && ours(path));
}

void refuse_directory_output(const std::string& command, const std::string& what,
                             const std::string& path, const std::string& example) {
  std::error_code ec;
  // A path ending in '/' names a directory too, made or not (report wrote its plot as
  // "DIR/-loss.png" and then failed).
  const std::string last = std::filesystem::path(path).filename().string();
  const bool slash = path.empty() || last.empty() || last == "." || last == "..";
  CHAINLM_CHECK(!slash && !std::filesystem::is_directory(path, ec), command, ": ", what,
                slash ? " names a directory" : " is a directory", "; give a file name, e.g. ",
                (std::filesystem::path(path) / example).lexically_normal().string(),
                " (nothing was written)");
}

void refuse_replacing_input(const std::string& command, const std::string& out,
                            const std::vector<std::string>& inputs) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const std::string& input : inputs)
    CHAINLM_CHECK(!fs::equivalent(out, input, ec), command, ": --out ", out, " is ",
                  fs::path(out).lexically_normal() == fs::path(input).lexically_normal()
                      ? "this command's own input"
                      : cat("the same file as this command's input ", input),
                  "; it is never replaced (--overwrite or not): choose another --out (nothing ",
                  "was written)");
  const fs::path parent =
      fs::path(out).parent_path().empty() ? fs::path(".") : fs::path(out).parent_path();
  if (!fs::is_directory(parent, ec)) return;
  const std::string name = fs::path(out).filename().string();
  std::vector<std::string> kept;
  switch (directory_kind(parent.string())) {
    case DirectoryKind::kRun:
      kept = {"latest", "metrics.jsonl"};
      break;
    case DirectoryKind::kCheckpoint:
      kept = {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"};
      break;
    case DirectoryKind::kData:
      kept = {"train.bin", "val.bin", "meta.json"};
      break;
    case DirectoryKind::kOther:
      return;
  }
  kept.insert(kept.end(), std::begin(kTokenizerDirFiles), std::end(kTokenizerDirFiles));
  CHAINLM_CHECK(std::find(kept.begin(), kept.end(), name) == kept.end(), command, ": --out ", out,
                " belongs to the ", directory_kind_name(directory_kind(parent.string())), " ",
                parent.string(), " (its ", name,
                "); it is never replaced (--overwrite or not): choose another --out (nothing was ",
                "written)");
}

OutputParentDirs::OutputParentDirs(const std::string& file, const std::string& command) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> missing;
  for (fs::path p = fs::path(file).parent_path(); !p.empty() && !fs::exists(p, ec);
       p = p.parent_path())
    missing.push_back(p);
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (!fs::create_directory(*it, ec) && !fs::is_directory(*it)) {
      const std::string reason = ec.message();
      remove_made();  // a constructor that throws has no destructor run
      fail(command, ": cannot create ", it->string(), " for --out: ", reason);
    }
    made_.push_back(it->string());
  }
}

OutputParentDirs::~OutputParentDirs() {
  remove_made();
}

void OutputParentDirs::remove_made() {
  std::error_code ec;
  for (auto it = made_.rbegin(); it != made_.rend(); ++it)
    if (!std::filesystem::remove(*it, ec)) break;  // not empty (or gone): leave it and those above
  made_.clear();
}

CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& v) {
        const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        errno = 0;
        if (digits) std::strtoull(v.c_str(), nullptr, 10);
        if (!digits || errno == ERANGE)
          return cat("must be a whole number from 0 to 18446744073709551615 (got ", v, ")");
        return std::string();
      },
      "0..2^64-1");
}

CLI::Validator in_float_range() {
  return CLI::Validator(
      [](std::string& v) {
        // strtof reads hexadecimal floats: "--lr 0x10" trained at 16 (as parse_float_list says).
        if (v.find_first_of("xX") != std::string::npos)
          return cat(v, " is not a decimal number (hexadecimal is not taken: a typo of 0.1 ",
                     "would read as another value)");
        errno = 0;
        char* end = nullptr;
        const float f = std::strtof(v.c_str(), &end);
        if (end != v.c_str() && *end == '\0' && errno == ERANGE && std::isinf(f))
          return cat(v, " is beyond an fp32 number's range (3.4e38)");
        // A nonzero number below fp32's smallest (1.4e-45) would read as 0: "--lr 0".
        if (end != v.c_str() && *end == '\0' && errno == ERANGE && f == 0.0f &&
            std::strtod(v.c_str(), nullptr) != 0.0)
          return cat(v, " is below an fp32 number's smallest (1.4e-45) and would read as 0");
        return std::string();  // not a number at all: CLI11's conversion says so
      },
      "fp32");
}

CLI::Validator at_least(long long min) {
  return CLI::Validator(
      [min](std::string& v) {
        try {
          size_t used = 0;
          if (std::stoll(v, &used) < min && used == v.size())
            return cat("must be at least ", min, " (got ", v, ")");
        } catch (const std::logic_error&) {  // not a number: CLI11's conversion says so
        }
        return std::string();
      },
      cat(">= ", min));
}

CLI::Validator whole_number_in(long long min, long long max) {
  return CLI::Validator(
      [min, max](std::string& v) {
        size_t used = 0;
        long long x = 0;
        try {
          x = std::stoll(v, &used);
        } catch (const std::out_of_range&) {
          return cat("must be in ", min, "..", max, " (got ", v, ")");
        } catch (const std::logic_error&) {
          used = 0;
        }
        if (used != v.size() || v.empty()) return cat("'", v, "' is not a whole number");
        if (x < min || x > max) return cat("must be in ", min, "..", max, " (got ", v, ")");
        return std::string();
      },
      cat(min, "..", max));
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json_document(read_file(path), path);
}

CLI::Option* add_precision_option(CLI::App* cmd, std::string& value, const std::string& help) {
  return cmd->add_option("--precision", value, help)
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

CLI::Option* add_kv_cache_option(CLI::App* cmd, std::string& value) {
  return cmd
      ->add_option("--kv-cache", value,
                   "KV cache elements: f32, f16 (half the memory and the bytes attention reads), or auto "
                   "(f16 for bf16 and quantized weights, f32 otherwise and for PHD models)")
      ->check(CLI::IsMember({"auto", "f32", "f16"}))
      ->capture_default_str();
}

CLI::Option* add_stream_interval_option(CLI::App* cmd, int& value) {
  return cmd
      ->add_option(
          "--stream-interval-ms", value,
          "A stream's tokens go out together at most this often (its first at once, each still "
          "its own event); 0 = each token as it comes. Every write wakes a thread that takes a "
          "core from decoding")
      ->check(whole_number_in(0, 10000))
      ->capture_default_str();
}

std::string given_options(const CLI::App& cmd, const std::vector<std::string>& except) {
  std::string given;
  for (const CLI::Option* o : cmd.get_options()) {
    const std::string name = o->get_name();
    if (o->count() == 0 || name == "--help" ||
        std::find(except.begin(), except.end(), name) != except.end())
      continue;
    given += cat(given.empty() ? "" : " ", name);
    for (const std::string& r : o->results()) given += " " + r;
  }
  return given;
}

}  // namespace chainlm::cli
