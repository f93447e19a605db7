// File: client/cli/stream_stopper.h
// -----------------------------------------------------------------------------
//
// StreamStopper ends a streaming command (`fs watch`, `process attach`) from
// Ctrl-C, SIGTERM or a deadline: a SignalRelay (signal_relay.h) for the
// signals and a timer thread for the deadline call the command's `stop` (the
// stream's cancel()), so that its blocked next() returns and the output ends
// cleanly.

#ifndef SMOLVM_CLIENT_CLI_STREAM_STOPPER_H_
#define SMOLVM_CLIENT_CLI_STREAM_STOPPER_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/signal_relay.h"

namespace smolvm::cli {

// StreamStopper calls `stop` on the first SIGINT or SIGTERM, or once
// `timeout` (if more than zero) has passed, whichever comes first, and then
// does nothing more. A signal that was ignored when it started (a background
// job's SIGINT) stays ignored; a second Ctrl-C, should the stop hang, kills
// the process as usual. One at a time per process (it holds the
// SignalRelay). Destroying it restores the handlers and joins its threads:
// destroy it before what `stop` touches.
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
  explicit StreamStopper(std::function<void()> stop) : stop_(std::move(stop)) {}
  // Calls stop_ the first time only.
  void StopOnce();

  const std::function<void()> stop_;
  std::atomic<bool> stopped_{false};
  std::atomic<int> stop_signal_{0};
  std::atomic<bool> timed_out_{false};
  std::unique_ptr<SignalRelay> relay_;
  // The deadline's thread waits on cv_ until the deadline or done_.
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mu_
  std::thread timer_;
};

// PrintUntilEnd reads `stream` (next() -> absl::StatusOr<T>, cancel()) until
// it ends, Ctrl-C or SIGTERM cancelling it, and hands each message to
// `print` (-> absl::Status; an error, such as a failed write, cancels the
// stream and is returned). OK when a signal stopped it or the daemon ended
// the stream cleanly (StreamCall's CANCELLED "the stream ended"); a
// CANCELLED from the daemon (it shut down) and other ends are returned.
template <typename Stream, typename Print>
absl::Status PrintUntilEnd(Stream& stream, Print&& print) {
  absl::StatusOr<std::unique_ptr<StreamStopper>> stopper =
      StreamStopper::Start([&stream] { stream.cancel(); }, absl::ZeroDuration());
  if (!stopper.ok()) return stopper.status();
  absl::Status ended;
  while (true) {
    auto message = stream.next();
    if (!message.ok()) {
      ended = message.status();
      break;
    }
    if (absl::Status p = print(*std::move(message)); !p.ok()) {
      ended = p;
      stream.cancel();
      break;
    }
  }
  const int sig = (*stopper)->stop_signal();
  stopper->reset();  // Joins its thread, which may still call cancel().
  if (sig != 0 || (ended.code() == absl::StatusCode::kCancelled &&
                   ended.message() == "the stream ended")) {
    return absl::OkStatus();
  }
  return ended;
}

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_STREAM_STOPPER_H_
