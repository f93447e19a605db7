// File: client/cli/raw_terminal.h
// -----------------------------------------------------------------------------
//
// RawTerminal puts our terminal in raw mode for `vm exec -it` and `vm shell`
// (every key, ^C and ^D included, goes to the guest's terminal as a byte) and
// guarantees that it is put back: when the object is destroyed, and also
// when smolvmctl is ended by SIGTERM, SIGHUP, SIGQUIT, SIGPIPE (`vm exec
// -it ... | head -1`) or SIGINT while it is raw (the handler restores the
// settings, then lets the signal end the process as it would have). A crash
// (SIGKILL, SIGSEGV) still leaves it raw: `stty sane` or `reset` repairs it.

#ifndef SMOLVM_CLIENT_CLI_RAW_TERMINAL_H_
#define SMOLVM_CLIENT_CLI_RAW_TERMINAL_H_

#include <signal.h>
#include <termios.h>

#include <memory>

#include "absl/status/statusor.h"

namespace smolvm::cli {

// RawTerminal holds a terminal in raw mode (cfmakeraw: no echo, no line
// editing, no signals from keys, no output processing) while it lives. One
// at a time per process (the signal handlers share one saved state).
class RawTerminal {
 public:
  // Enter saves `fd`'s settings, installs the fatal-signal handlers and
  // switches `fd` to raw mode. FAILED_PRECONDITION if `fd` is not a
  // terminal; the errno's status if a call fails (nothing is left changed).
  static absl::StatusOr<std::unique_ptr<RawTerminal>> Enter(int fd);
  // Restores the saved settings, then the previous signal handlers.
  ~RawTerminal();
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  struct Handler {
    int sig;
    struct sigaction old;
    bool installed;
  };

  RawTerminal(int fd, const termios& saved) : fd_(fd), saved_(saved) {}

  const int fd_;
  const termios saved_;
  // SIGINT too, though no key sends it while raw: a `kill -INT` that comes
  // before or after the session loop relays it still restores us.
  Handler handlers_[5] = {{SIGTERM, {}, false},
                          {SIGHUP, {}, false},
                          {SIGQUIT, {}, false},
                          {SIGPIPE, {}, false},
                          {SIGINT, {}, false}};
};

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_RAW_TERMINAL_H_
