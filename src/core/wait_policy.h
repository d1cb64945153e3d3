#pragma once
// How idle OpenMP threads wait (docs/training.md, "Shared machines"). libgomp reads
// OMP_WAIT_POLICY once, when the program is loaded, so a command that wants another policy than
// the environment's starts itself again with it.
//
// By default idle threads spin for a while before they sleep: a decode step opens dozens of
// parallel regions of microseconds each, and waking a sleeping thread for each one made
// decoding 4-6x slower (measured). But on a machine where another process keeps a core busy,
// a spinning thread takes turns on the shared core with the thread doing the work, and a
// training step, whose regions are milliseconds long, ran at a quarter of its quiet speed
// instead of about half. So training-type commands (large regions) wait passively; inference
// keeps the default. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins.
#include <string>

namespace chainlm {

// Re-executes this program (same arguments, same process id) with OMP_WAIT_POLICY=passive,
// unless the environment sets OMP_WAIT_POLICY (to active or passive: another value is warned of
// and replaced) or GOMP_SPINCOUNT already. Returns when it did
// not re-execute (including when exec failed: the run goes on with the default policy).
void reexec_with_passive_wait(char** argv);

// The policy in effect as the environment states it: "passive", "active", "spin count N", or
// "default" (spin briefly, then sleep).
std::string omp_wait_policy();

}  // namespace chainlm
