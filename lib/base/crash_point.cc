#include "lib/base/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace smolvm {

void CrashPoint(const char* point) {
  // Read once: the environment does not change under a running daemon.
  static const std::string wanted = [] {
    const char* env = std::getenv("SMOLVMD_TEST_CRASH_AT");
    return std::string(env ? env : "");
  }();
  if (wanted.empty() || wanted != point) return;
  const char msg[] = "smolvmd: SMOLVMD_TEST_CRASH_AT: dying with SIGKILL at ";
  (void)!write(2, msg, sizeof(msg) - 1);
  (void)!write(2, point, strlen(point));
  (void)!write(2, "\n", 1);
  kill(getpid(), SIGKILL);
  pause();
}

}  // namespace smolvm
