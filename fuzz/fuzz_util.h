#pragma once
// Shared by the libFuzzer targets in fuzz/ (docs/reliability.md, "Fuzzing").
//
// A target hands its input to a real loader; the loader may refuse it with chainlm::Error (an
// expected outcome) and must do nothing else: a crash, a sanitizer report, any other exception
// escaping, a hang or a huge allocation is a finding. Loaders that take paths get the input
// written to a per-process scratch directory (tmpfs when there is one), created once and reused.
//
// Inputs that stand for several files (a checkpoint or Hugging Face directory) are split into
// parts at kPartSeparator; fuzz/make_corpus writes its seeds the same way, and the targets'
// dictionaries hold the separator so mutations can add and remove parts.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace chainlm::fuzz {

inline constexpr std::string_view kPartSeparator = "\n#@chainlm-fuzz-part@#\n";

// The per-process scratch directory, removed at exit. The path is never destroyed, so the
// exit handler (which runs after function-local statics are gone) can still read it.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path* dir = [] {
    std::error_code ec;
    std::filesystem::path base = "/dev/shm";
    if (!std::filesystem::is_directory(base, ec) || ::access(base.c_str(), W_OK) != 0) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    std::string templ = (base / "chainlm-fuzz-XXXXXX").string();
    if (!::mkdtemp(templ.data())) {
      std::perror("chainlm fuzz: mkdtemp");
      std::abort();
    }
    auto* path = new std::filesystem::path(templ);
    std::atexit([] {
      std::error_code ec2;
      std::filesystem::remove_all(scratch_dir(), ec2);
    });
    return path;
  }();
  return *dir;
}

// Writes bytes to scratch_dir()/name (a plain overwrite: the loaders under test read it) and
// returns the path. Aborts when the file cannot be written: that is the harness failing, not
// the loader.
inline std::string write_scratch_file(const std::string& name, std::string_view bytes) {
  const std::string path = (scratch_dir() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) ||
      std::fclose(f) != 0) {
    std::perror(("chainlm fuzz: cannot write " + path).c_str());
    std::abort();
  }
  return path;
}

// A fresh, empty scratch_dir()/name directory for a multi-file input.
inline std::string fresh_scratch_subdir(const std::string& name) {
  const std::filesystem::path dir = scratch_dir() / name;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The input's parts between separators (one part when there is none).
inline std::vector<std::string_view> split_parts(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (;;) {
    const size_t at = rest.find(kPartSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(rest.substr(0, at));
    rest.remove_prefix(at + kPartSeparator.size());
  }
  parts.push_back(rest);
  return parts;
}

// The inverse of split_parts, for make_corpus.
inline std::string join_parts(const std::vector<std::string>& parts) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += kPartSeparator;
    out += parts[i];
  }
  return out;
}

// Runs f; a chainlm::Error is the loader refusing the input, which is fine. Anything else
// escapes to libFuzzer, which reports it (an uncaught exception aborts with a stack trace).
// With CHAINLM_FUZZ_VERBOSE set, the refusals are printed (to see why a seed or a hand-made
// input is refused: `CHAINLM_FUZZ_VERBOSE=1 build-fuzz/<target> FILE`).
template <typename F>
void expect_only_chainlm_errors(F&& f) {
  static const bool verbose = std::getenv("CHAINLM_FUZZ_VERBOSE") != nullptr;
  try {
    f();
  } catch (const chainlm::Error& e) {
    if (verbose) std::fprintf(stderr, "chainlm fuzz: refused: %s\n", e.what());
  }
}

// A broken invariant of a loader that did not refuse its input: a finding.
#define CHAINLM_FUZZ_ASSERT(cond)                                                        \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "chainlm fuzz: invariant failed at %s:%d: %s\n", __FILE__, \
                   __LINE__, #cond);                                                     \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

}  // namespace chainlm::fuzz
