// Sanitizer defaults compiled into every executable of a sanitizer build (CMakeLists.txt adds
// this file when CHAINLM_SANITIZE is set; the sanitizer runtime calls the function at start).
//
// A process started by mpirun keeps LeakSanitizer off: OpenMPI dlclose()s its plugins in
// MPI_Finalize, so their process-lifetime allocations are reported as leaks from "<unknown
// module>", which no suppression can name. The same code paths are leak-checked in every
// single-process test. (scripts/sanitize_env.sh leaves detect_leaks out of ASAN_OPTIONS, which
// would override this.)
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

// The runtime asks before libc and its own interceptors are ready (getenv still sees nothing,
// and open/read/strlen are intercepted), so read /proc/self/environ with raw system calls into
// a static buffer and compare by hand; uninstrumented, as the shadow memory does not exist yet.
#define CHAINLM_NO_SANITIZE __attribute__((no_sanitize("address", "undefined")))
CHAINLM_NO_SANITIZE bool started_by_mpirun() {
  static char env[1 << 16];
  const long fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/environ", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  long n = 0, got = 0;
  while (n < (long)sizeof env - 1 && (got = syscall(SYS_read, fd, env + n, sizeof env - 1 - n)) > 0) n += got;
  syscall(SYS_close, fd);
  const char key[] = "OMPI_COMM_WORLD_SIZE=";
  const long key_len = sizeof key - 1;
  for (long i = 0; i < n;) {  // NUL-separated NAME=value entries
    long k = 0;
    while (k < key_len && i + k < n && env[i + k] == key[k]) ++k;
    if (k == key_len) return true;
    while (i < n && env[i] != 0) ++i;
    ++i;
  }
  return false;
}

}  // namespace

extern "C" CHAINLM_NO_SANITIZE const char* __lsan_default_options() {
  return started_by_mpirun() ? "detect_leaks=0" : "";
}
