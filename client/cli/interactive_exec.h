// File: client/cli/interactive_exec.h
// -----------------------------------------------------------------------------
//
// The session loop of `vm exec -i/-t` and `vm shell` (ExecStream through
// SmolVM::exec_session). Three threads share one ExecSession:
//   - the caller's reads next() and copies the output to our stdout/stderr
//     (raw bytes, each chunk flushed) until the exit;
//   - a stdin pump (with -i) poll()s our stdin and a stop pipe, sends each
//     chunk it reads with write_stdin, and close_stdin at our EOF;
//   - a SignalRelay (signal_relay.h) turns SIGWINCH into resize(), with the
//     size read again from our terminal, and SIGINT (and, unless our
//     terminal is raw, SIGTERM/SIGHUP) into signal() for the command (a
//     second SIGINT within 2 s gives up: cancel(), which kills the command,
//     exit 130).
// With a raw terminal (RawTerminal, raw_terminal.h) ^C is just a byte that
// the guest's terminal turns into SIGINT for its foreground job (so SIGINT
// only comes from `kill`), and SIGTERM/SIGHUP/SIGQUIT/SIGPIPE end smolvmctl
// after restoring the terminal (the call dies with us, and the daemon kills
// the command).

#ifndef SMOLVM_CLIENT_CLI_INTERACTIVE_EXEC_H_
#define SMOLVM_CLIENT_CLI_INTERACTIVE_EXEC_H_

#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/connection.h"
#include "client/smolvm.h"

namespace smolvm::cli {

// InteractiveMode is what -i and -t asked for (`vm shell`: both).
struct InteractiveMode {
  // -t: the command runs on a pseudo-terminal in the guest, sized like
  // ours, with our $TERM.
  bool tty = false;
  // -i: our stdin goes to the command as it is read, then EOF. Without it
  // the command's stdin ends at once (with tty: one ^D), as `vm exec`'s
  // /dev/null does.
  bool stream_stdin = false;
};

// RunInteractive runs `argv` in VM `vm_id` interactively and returns how it
// ended, or the error that kept it from running or ended the session (the
// caller maps both to exit codes as for `vm exec`). Our terminal is raw
// while it runs when `mode` has both tty and stream_stdin and our stdin is a
// terminal; it is restored before this returns. -t without a terminal of
// ours still runs the command on a guest terminal (24x80 unless our stdout
// or stderr is a terminal), like `docker exec -t`.
absl::StatusOr<ExecExit> RunInteractive(const std::string& vm_id, const ClientOptions& client,
                                        const std::vector<std::string>& argv,
                                        const RunOptions& options, InteractiveMode mode);

// SessionIo is where RunSession's data goes (RunInteractive: our fds).
struct SessionIo {
  int in = STDIN_FILENO;  // -1: no input (close_stdin at once).
  int out = STDOUT_FILENO;
  int err = STDERR_FILENO;
  // The terminal whose size SIGWINCH reports (-1: none, no SIGWINCH), and
  // the size the session was opened with (resent if it changed meanwhile).
  int terminal = -1;
  uint32_t rows = 0, cols = 0;
  // Our terminal is raw (RawTerminal): SIGTERM/SIGHUP are left to it.
  bool raw = false;
};

// RunSession drives an open `session` until its exit (see the file
// comment), then stops its threads. Exposed for tests with a fake session.
absl::StatusOr<ExecExit> RunSession(ExecSession& session, const SessionIo& io);

// TerminalSize reads `fd`'s size in cells (TIOCGWINSZ), capped to the
// 1000x1000 the API takes; false if it is not a terminal or has no size.
bool TerminalSize(int fd, uint32_t* rows, uint32_t* cols);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_INTERACTIVE_EXEC_H_
