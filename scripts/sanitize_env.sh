#!/usr/bin/env bash
# Runs a command with the sanitizer options chainlm's sanitizer builds use:
# every ASan/UBSan report is fatal (non-zero exit, so the test fails); LeakSanitizer (on by
# default; src/sanitizer_defaults.cpp turns it off in processes mpirun starts) ignores
# only the third-party runtimes listed in scripts/lsan.supp (OpenMPI, OpenMP, OpenBLAS), whose
# process-lifetime allocations are not ours to free.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/lsan.supp:print_suppressions=0}"
exec "$@"
