#pragma once
// Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed) during a long job (training): the
// first asks the job to stop at its next safe point (the trainer finishes its step and saves a
// checkpoint), the second quits at once. A broken pipe (SIGPIPE: the reader of the job's output
// is gone, as in `train ... | head`) asks for the same stop, once. Without these handlers the
// default action killed a run with no message and lost up to a whole save interval.
namespace chainlm {

// One stop can arrive twice within moments: coreutils `timeout` sends its SIGTERM to the
// process and to its process group, a terminal's Ctrl-C reaches every process of the job, and
// mpirun forwards what it receives. Read as "quit at once", the duplicate cost the checkpoint
// (one `timeout` run in five saved nothing). A second signal within this many milliseconds of
// the first is the same stop (train's handlers here, serve's signal thread).
inline constexpr long long kSameStopMs = 1000;

// Installs the handlers (idempotent). `what` is printed by the first signal: "stopping after
// this step and saving a checkpoint". From then on the calling thread and the OpenMP pool block
// SIGINT, SIGTERM and SIGHUP, and a thread of their own takes them, so no handler interrupts a
// compute kernel; call it before starting other threads that compute.
void install_stop_handlers(const char* what);
// The process is ending for an error: stop signals from now on are let go without a word. Under
// mpirun the other ranks get SIGTERM when one exits non-zero, and a rank still on its way out
// announced "saving a checkpoint" it would never write.
void end_without_stopping();
// Whether a stop was asked, and by which signal (0 when not).
bool stop_requested();
int stop_signal();
// The signal's name: "SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE".
const char* signal_name(int sig);

}  // namespace chainlm
