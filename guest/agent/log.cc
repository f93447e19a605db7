#include "guest/agent/log.h"

#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>

namespace smolvm::guest {

void Log(const char* format, ...) {
  char line[1024];
  int prefix = std::snprintf(line, sizeof line, "smolvm-agent: ");
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(line + prefix, sizeof line - prefix - 1, format, args);
  va_end(args);
  size_t size = prefix + (n < 0 ? 0 : std::min<size_t>(n, sizeof line - prefix - 2));
  line[size++] = '\n';
  // One write, so lines from different threads do not interleave.
  (void)!write(STDERR_FILENO, line, size);
}

}  // namespace smolvm::guest
