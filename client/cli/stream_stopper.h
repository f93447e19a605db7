// File: client/cli/stream_stopper.h
// -----------------------------------------------------------------------------
//
// StreamStopper ends a streaming command (`fs watch`, `process attach`) from
// Ctrl-C, SIGTERM or a deadline. The signal handler only writes the signal's
// number to a pipe; a thread of the stopper reads it (or sees the deadline
// pass) and calls the command's `stop` (the stream's cancel()), so that its
// blocked next() returns and the output ends cleanly.

#ifndef SMOLVM_CLIENT_CLI_STREAM_STOPPER_H_
#define SMOLVM_CLIENT_CLI_STREAM_STOPPER_H_

#include <signal.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace smolvm::cli {

// StreamStopper calls `stop` from its own thread on the first SIGINT or
// SIGTERM, or once `timeout` (if more than zero) has passed, whichever comes
// first, and then does nothing more. A signal that was ignored when it
// started (a background job's SIGINT) stays ignored; a second Ctrl-C, should
// the stop hang, kills the process as usual. One at a time per process.
// Destroying it restores the handlers and joins the thread: destroy it
// before what `stop` touches.
class StreamStopper {
 public:
  static absl::StatusOr<std::unique_ptr<StreamStopper>> Start(std::function<void()> stop,
                                                              absl::Duration timeout);
  ~StreamStopper();
  StreamStopper(const StreamStopper&) = delete;
  StreamStopper& operator=(const StreamStopper&) = delete;

  // The signal that stopped it; 0 if none did.
  int stop_signal() const { return stop_signal_.load(); }
  // Whether the timeout stopped it.
  bool timed_out() const { return timed_out_.load(); }

 private:
  struct Handler {
    int sig;
    struct sigaction old;
    bool installed;
  };

  StreamStopper(int read_fd, int write_fd) : read_fd_(read_fd), write_fd_(write_fd) {}
  void Run(const std::function<void()>& stop, absl::Duration timeout);

  const int read_fd_;
  const int write_fd_;
  Handler handlers_[2] = {{SIGINT, {}, false}, {SIGTERM, {}, false}};
  std::atomic<int> stop_signal_{0};
  std::atomic<bool> timed_out_{false};
  std::thread thread_;
};

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_STREAM_STOPPER_H_
