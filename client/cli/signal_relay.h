// File: client/cli/signal_relay.h
// -----------------------------------------------------------------------------
//
// SignalRelay turns signals into calls on an ordinary thread, for the
// interactive exec loop (interactive_exec.h): SIGWINCH becomes a terminal
// resize, SIGINT/SIGTERM/SIGHUP a signal to the guest command. Its handler
// only writes the signal's number to a pipe (the self-pipe trick); the
// relay's thread reads the pipe and runs the callback, where any work
// (an RPC, a lock) is safe. Unlike StreamStopper (stream_stopper.h), which
// acts once and stops, it relays every delivery until destroyed.

#ifndef SMOLVM_CLIENT_CLI_SIGNAL_RELAY_H_
#define SMOLVM_CLIENT_CLI_SIGNAL_RELAY_H_

#include <signal.h>

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace smolvm::cli {

// SignalRelay calls `on_signal(sig)` on its own thread, in order, for each
// delivery of one of `signals` while it lives (deliveries that come faster
// than they are handled may merge, as signals do). A signal that was
// ignored when it started (a background job's SIGINT, nohup's SIGHUP)
// stays ignored. With `once`, each handler is reset to the default as it
// runs (SA_RESETHAND): the second delivery of a signal acts as if the relay
// were not there (a second ^C kills). One at a time per process.
// Destroying it restores the previous handlers and joins the thread, after
// the callback in progress, if any, returns: destroy it before what
// `on_signal` touches, and make sure `on_signal` cannot block forever.
class SignalRelay {
 public:
  static absl::StatusOr<std::unique_ptr<SignalRelay>> Start(std::vector<int> signals,
                                                            std::function<void(int)> on_signal,
                                                            bool once = false);
  ~SignalRelay();
  SignalRelay(const SignalRelay&) = delete;
  SignalRelay& operator=(const SignalRelay&) = delete;

 private:
  struct Handler {
    int sig;
    struct sigaction old;
    bool installed;
  };

  SignalRelay(int read_fd, int write_fd) : read_fd_(read_fd), write_fd_(write_fd) {}
  void Run(const std::function<void(int)>& on_signal);

  const int read_fd_;
  const int write_fd_;
  std::vector<Handler> handlers_;
  std::thread thread_;
};

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_SIGNAL_RELAY_H_
