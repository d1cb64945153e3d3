#pragma once
// Fault injection for tests (docs/reliability.md): named points in the code where a test can
// make the process die, stop, fail a write or see a NaN gradient, through the environment:
//
//   CHAINLM_CRASH_AT="point[:N][,point[:N]...]"   raise(SIGKILL) at the N-th (default: first)
//                                                 time the point is reached
//   CHAINLM_PAUSE_AT="point[:N][,...]"            raise(SIGSTOP) there; the test changes the
//                                                 world (remounts, chmods) and sends SIGCONT
//   CHAINLM_WRITE_ERROR_AT="point[:N][=ERRNO]"    from the N-th hit on, that write fails with
//                                                 ERRNO (ENOSPC by default; also EIO, EROFS,
//                                                 EACCES, EDQUOT): a disk that fills up and
//                                                 stays full, where a real one is unavailable
//   CHAINLM_FAULT_NAN_GRAD_AT_STEP="S[,S2,A-B]"   the gradient of these optimizer steps
//                                                 (1-based, as in metrics.jsonl) turns NaN
//
// The environment is read once, on first use; when none of these is set every hook is one
// predictable branch on a cached flag. Never set them outside tests.
namespace chainlm::fault {

namespace detail {
bool read_environment();  // parses every variable above; true when any is set
void crash_or_pause(const char* point);
int write_error(const char* point);
bool nan_grad_at_step(long step);
inline bool armed() {
  static const bool armed = read_environment();
  return armed;
}
}  // namespace detail

// A crash point: dies (SIGKILL) or stops (SIGSTOP) here when CHAINLM_CRASH_AT /
// CHAINLM_PAUSE_AT names it.
inline void point(const char* name) {
  if (detail::armed()) detail::crash_or_pause(name);
}

// The errno a write at this point must fail with (0 = none), per CHAINLM_WRITE_ERROR_AT.
inline int write_error(const char* name) { return detail::armed() ? detail::write_error(name) : 0; }

// Whether optimizer step `step` (1-based) gets a NaN gradient, per
// CHAINLM_FAULT_NAN_GRAD_AT_STEP.
inline bool nan_grad_at_step(long step) {
  return detail::armed() && detail::nan_grad_at_step(step);
}

}  // namespace chainlm::fault
