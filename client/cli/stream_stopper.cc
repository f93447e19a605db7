#include "client/cli/stream_stopper.h"

#include <signal.h>

#include <chrono>
#include <utility>

#include "absl/time/clock.h"

namespace smolvm::cli {

absl::StatusOr<std::unique_ptr<StreamStopper>> StreamStopper::Start(std::function<void()> stop,
                                                                    absl::Duration timeout) {
  std::unique_ptr<StreamStopper> stopper(new StreamStopper(std::move(stop)));
  StreamStopper* self = stopper.get();
  absl::StatusOr<std::unique_ptr<SignalRelay>> relay = SignalRelay::Start(
      {SIGINT, SIGTERM},
      [self](int sig) {
        if (!self->stopped_.load()) self->stop_signal_.store(sig);
        self->StopOnce();
      },
      /*once=*/true);
  if (!relay.ok()) return relay.status();
  stopper->relay_ = *std::move(relay);
  if (timeout > absl::ZeroDuration()) {
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    stopper->timer_ = std::thread([self, deadline] {
      std::unique_lock<std::mutex> lock(self->mu_);
      if (self->cv_.wait_until(lock, deadline, [self] { return self->done_; })) return;
      lock.unlock();
      if (!self->stopped_.load()) self->timed_out_.store(true);
      self->StopOnce();
    });
  }
  return stopper;
}

StreamStopper::~StreamStopper() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  relay_.reset();
}

void StreamStopper::StopOnce() {
  if (!stopped_.exchange(true)) stop_();
}

}  // namespace smolvm::cli
