#include "client/cli/raw_terminal.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "absl/status/status.h"

namespace smolvm::cli {
namespace {

// What the signal handler restores: the raw terminal's fd (-1: none) and
// its settings from before. g_saved is written before g_fd is set and not
// changed while it is, so the handler reads a complete copy.
std::atomic<int> g_fd{-1};
termios g_saved;
static_assert(std::atomic<int>::is_always_lock_free, "read in a signal handler");

// RestoreAndReraise handles the signals of RawTerminal::handlers_ while the
// terminal is raw. tcsetattr and raise are async-signal-safe. SA_RESETHAND
// has made the signal's action the default again, and the signal is blocked
// until the handler returns: the raised one is then delivered and ends the
// process with the status its sender expects (128+N to a shell).
void RestoreAndReraise(int sig) {
  const int saved_errno = errno;
  const int fd = g_fd.load();
  if (fd >= 0) tcsetattr(fd, TCSANOW, &g_saved);
  raise(sig);
  errno = saved_errno;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RawTerminal>> RawTerminal::Enter(int fd) {
  if (!isatty(fd)) {
    return absl::FailedPreconditionError("raw mode: the file is not a terminal");
  }
  termios saved;
  if (tcgetattr(fd, &saved) != 0) {
    return absl::ErrnoToStatus(errno, "read the terminal's settings");
  }
  std::unique_ptr<RawTerminal> terminal(new RawTerminal(fd, saved));
  g_saved = saved;
  g_fd.store(fd);
  // The handlers go in before the switch, so that there is no moment when
  // the terminal is raw and a SIGTERM would leave it so.
  struct sigaction action = {};
  action.sa_handler = RestoreAndReraise;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  for (Handler& h : terminal->handlers_) {
    // A signal ignored when we started (nohup's SIGHUP) stays ignored.
    if (sigaction(h.sig, nullptr, &h.old) != 0 || h.old.sa_handler == SIG_IGN) continue;
    h.installed = sigaction(h.sig, &action, &h.old) == 0;
  }
  termios raw = saved;
  cfmakeraw(&raw);
  if (tcsetattr(fd, TCSANOW, &raw) != 0) {
    return absl::ErrnoToStatus(errno, "put the terminal in raw mode");  // ~ undoes the rest.
  }
  return terminal;
}

RawTerminal::~RawTerminal() {
  // Settings first, handlers last: a signal that comes in between finds the
  // handler still in place, which restores (again, harmlessly) and ends us.
  tcsetattr(fd_, TCSANOW, &saved_);
  g_fd.store(-1);
  for (Handler& h : handlers_) {
    if (h.installed) sigaction(h.sig, &h.old, nullptr);
  }
}

}  // namespace smolvm::cli
