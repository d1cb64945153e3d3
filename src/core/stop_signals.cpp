#include "core/stop_signals.h"

#include <omp.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <ctime>
#include <thread>

namespace chainlm {

namespace {

volatile std::sig_atomic_t g_signal = 0;
volatile std::sig_atomic_t g_ending = 0;  // end_without_stopping()
const char* g_what = "";

void write_stderr(const char* s) {
  const ssize_t ignored = ::write(2, s, std::strlen(s));
  (void)ignored;
}

// When the first stop signal came, in monotonic milliseconds.
std::atomic<long long> g_first_ms{0};
static_assert(std::atomic<long long>::is_always_lock_free, "read and written in a signal handler");

long long monotonic_ms() {  // clock_gettime is async-signal-safe
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

// Async-signal-safe: flags, clock_gettime, write(2) and _exit only.
void on_stop_signal(int sig) {
  if (g_ending) return;  // already on its way out, its error said
  if (g_signal != 0) {
    if (monotonic_ms() - g_first_ms.load() < kSameStopMs) {
      write_stderr(
          "chainlm: the stop signal again within a second: the same stop (send it once more, "
          "later, to "
          "quit at once)\n");
      return;
    }
    write_stderr("\nchainlm: second stop signal: quitting at once (no checkpoint of this step)\n");
    ::_exit(128 + sig);
  }
  g_first_ms = monotonic_ms();
  g_signal = sig;
  write_stderr("\nchainlm: ");
  write_stderr(sig == SIGINT   ? "SIGINT (Ctrl-C)"
               : sig == SIGHUP ? "SIGHUP (terminal closed)"
                               : "SIGTERM");
  write_stderr(" received: ");
  write_stderr(g_what);
  write_stderr(" (send it again, a second or more later, to quit at once)\n");
}

// The reader of the job's output went away (`train ... | head`, a `tee` killed): a stop like
// the others, without a word (the output is what is gone) and never a second one, since every
// later write to it raises the signal again.
void on_broken_pipe(int) {
  if (g_signal == 0) g_signal = SIGPIPE;
}

sigset_t stop_set() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGHUP);
  return s;
}

}  // namespace

void install_stop_handlers(const char* what) {
  static bool installed = false;
  g_what = what;
  if (installed) return;
  installed = true;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in flight go on; the job checks the flag
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  // SIGPIPE goes to the thread that wrote (the job's own, between steps, never inside a
  // kernel), so it is not blocked; the write it came from fails with EPIPE and is let go.
  struct sigaction pipe_sa = sa;
  pipe_sa.sa_handler = on_broken_pipe;
  sigaction(SIGPIPE, &pipe_sa, nullptr);
  // The handler must never run on a thread in the middle of a compute kernel: oneDNN's JIT
  // kernels on AVX-512 corrupted the heap when a handler's frame landed on their stack (a
  // SIGTERM during training aborted about one run in two). So the threads that compute (this
  // one and the OpenMP pool, which later threads inherit the mask from) block the signals, and
  // a thread of their own, idle in pause(), is where the kernel delivers them.
  const sigset_t s = stop_set();
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
#pragma omp parallel
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
  std::thread([s] {
    pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
    for (;;) ::pause();
  }).detach();
}

void end_without_stopping() {
  g_ending = 1;
}

bool stop_requested() { return g_signal != 0; }
int stop_signal() { return g_signal; }

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    case SIGPIPE:
      return "SIGPIPE";
    default: return "a signal";
  }
}

}  // namespace chainlm
