// chainlm: train, grow, tune, evaluate and serve Chain-of-Model and PHD language models.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <string>

#include "cli/commands.h"
#include "cli/usage_errors.h"
#include "core/error.h"
#include "core/threads.h"
#include "core/version.h"
#include "core/wait_policy.h"
#include "kernels/gemm_backend.h"

namespace {

// A command line chainlm cannot parse (unknown option, a value a validator refuses).
constexpr int kUsageError = 2;

// Commands whose parallel regions are long (training steps, batched evaluation): idle OpenMP
// threads sleep instead of spinning, so a process busy on another core costs them its share of
// the machine, not most of it (src/core/wait_policy.h).
bool waits_passively(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  return command == "train" || command == "eval" ||
         (command == "bench" && argc > 2 && std::string(argv[2]) == "train");
}

// Token shards and weights are memory-mapped: a file truncated or replaced in place while in
// use (`: > train.bin` during a training) ends the process with SIGBUS, which said nothing.
// Say what it was, then die of the signal as before (exit status 135 in a shell).
void on_sigbus(int) {
  static const char message[] =
      "chainlm: error: a file mapped into memory (a token shard or a model's weights) was "
      "truncated or "
      "replaced while in use (SIGBUS); checkpoints and outputs already written are complete\n";
  (void)!::write(2, message, sizeof message - 1);
  ::signal(SIGBUS, SIG_DFL);
  ::raise(SIGBUS);
}

// Commands that write one output (expand, quantize, export, prepare) died of Ctrl-C without a
// word, leaving a temporary of up to the model's size: say what becomes of it, then die of the
// signal as before (exit status 130 or 143). (train saves a checkpoint instead; serve stops.)
const char* g_interrupt_message = nullptr;  // chosen before the handler is installed

void on_interrupt(int sig) {
  (void)!::write(2, g_interrupt_message, std::strlen(g_interrupt_message));
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// The message for a command that writes one output, or nullptr.
const char* interrupt_message(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "prepare")
    return "\nchainlm: prepare interrupted; a data directory already at --out is as it was unless its "
           "shards were being replaced (then it is marked unfinished, .prepare-incomplete, which train "
           "and eval refuse until prepare runs again); the temporary files are removed by the next "
           "prepare of that --out\n";
  if (command == "expand" || command == "quantize" || command == "export")
    return "\nchainlm: interrupted before its output was complete; nothing under --out was "
           "replaced, and what "
           "was written so far is removed by the next run with the same --out\n";
  return nullptr;
}

// Standard input, output and error closed by whoever started chainlm (`<&- >&- 2>&-`, some
// daemon managers): the next files and sockets opened take descriptors 0-2, and a server's log
// line for stderr went into a client's connection. They are opened on /dev/null first.
void open_missing_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      const int opened = ::open("/dev/null", O_RDWR);
      if (opened >= 0 && opened != fd) ::close(opened);  // (another thread took it: not here)
    }
}

// Commands whose standard output carries a status line, not their output (which is a file or a
// directory, written before): a full or closed stdout is a warning there, since failing the
// command made a retry refuse the output it had written.
bool stdout_is_status(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  return command == "prepare" || command == "export" || command == "quantize" ||
         command == "expand" || command == "train" || command == "serve" ||
         (command == "tokenizer" && argc > 2 && std::string(argv[2]) == "train");
}

// After the command: what it printed must have reached its file (`eval ppl --json >
// results.json` on a full disk left an empty file and exited 0). std::cout is synced with
// stdout, so both report here. Returns the exit status.
int check_stdout_written(int status, bool status_only) {
  std::cout.flush();
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout) && std::cout) return status;
  const int err = errno;
  if (status_only) {
    std::fprintf(stderr,
                 "warning: the status line could not be written to standard output%s%s; the "
                 "command's output was written all the same\n",
                 err ? ": " : "", err ? std::strerror(err) : "");
    return status;
  }
  std::fprintf(stderr, "error: the output could not be written to standard output%s%s\n",
               err ? ": " : "", err ? std::strerror(err) : "");
  return 1;
}

// Commands that write files, run under mpirun with several ranks: only train and bench train
// use the ranks; every rank ran the others whole (tokenizer train's both wrote the same --out, the
// check that refuses an existing one being no lock).
void refuse_writers_under_mpirun(int argc, char** argv) {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (argc < 2 || !size || std::atoi(size) <= 1) return;
  for (const char* writer :
       {"tokenizer", "prepare", "expand", "export", "quantize", "report", "plot", "serve"})
    if (!std::strcmp(argv[1], writer))
      chainlm::fail(
          "chainlm ", writer, " under mpirun with ", size,
          " ranks: it is not data-parallel (only train and bench train use the ranks), so every "
          "rank would run it whole and write the same output; run it without mpirun");
}

}  // namespace

int main(int argc, char** argv) {
  open_missing_standard_descriptors();
  ::signal(SIGBUS, on_sigbus);
  // A file-size limit (`ulimit -f`) killed every writer with SIGXFSZ and no word; ignored, the
  // write fails with EFBIG and each writer says which file, keeping what it keeps on a full disk.
  ::signal(SIGXFSZ, SIG_IGN);
  if ((g_interrupt_message = interrupt_message(argc, argv))) {
    ::signal(SIGINT, on_interrupt);
    ::signal(SIGTERM, on_interrupt);
  }
  if (waits_passively(argc, argv)) chainlm::reexec_with_passive_wait(argv);
  CLI::App app{"chainlm: Chain-of-Model (CoLM, CoLM-Air) and PHD-Transformer language models on CPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("chainlm ") + chainlm::kChainlmVersion);
  chainlm::cli::add_tokenizer_command(app);
  chainlm::cli::add_prepare_command(app);
  chainlm::cli::add_train_command(app);
  chainlm::cli::add_generate_command(app);
  chainlm::cli::add_bench_command(app);
  chainlm::cli::add_expand_command(app);
  chainlm::cli::add_export_command(app);
  chainlm::cli::add_quantize_command(app);
  chainlm::cli::add_info_command(app);
  chainlm::cli::add_serve_command(app);
  chainlm::cli::add_eval_command(app);
  chainlm::cli::add_plot_command(app);
  chainlm::cli::add_report_command(app);
  try {
    // Before a command writes anything; help and the version need no GEMM, and info shows what
    // is wrong with the choice.
    bool help = false;
    for (int i = 1; i < argc; ++i)
      help = help || !std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--version");
    const bool info = argc > 1 && !std::strcmp(argv[1], "info");
    if (!help) refuse_writers_under_mpirun(argc, argv);
    // (info has no --threads: its refusal advised an option it does not have.)
    if (!help) chainlm::check_omp_num_threads_environment(!info);
    if (!help && !info) chainlm::check_gemm_environment();
    if (!help) chainlm::warn_of_unknown_onednn_isa();
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print as CLI11 prints them; a usage error is one line on stderr
    // like every other error (CLI11's own adds a second line), with exit code 2, the usage
    // errors' by convention (CLI11's own codes, 101-115, differ by the kind of mistake, and
    // read like a crash's 128 + signal to a script).
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
      return check_stdout_written(app.exit(e), false);
    std::fprintf(stderr, "error: %s\n", chainlm::cli::describe_usage_error(app, e).c_str());
    return kUsageError;
  } catch (const chainlm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // The commands estimate their memory before they allocate (docs/reliability.md); what the
    // estimates miss ends here, and "error: std::bad_alloc" named neither cause nor way on.
    std::fprintf(stderr,
                 "error: out of memory: an allocation failed (the machine, its other processes or "
                 "a ulimit left too little for this command: a smaller model, batch or sequence "
                 "length needs less)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return check_stdout_written(0, stdout_is_status(argc, argv));
}
