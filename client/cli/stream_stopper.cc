#include "client/cli/stream_stopper.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/clock.h"

namespace smolvm::cli {
namespace {

// The write end of the running StreamStopper's pipe, for the signal handler
// (-1: none).
std::atomic<int> g_stop_fd{-1};
static_assert(std::atomic<int>::is_always_lock_free, "read in a signal handler");

// OnStopSignal is the SIGINT/SIGTERM handler: it only writes the signal's
// number to the pipe (write is async-signal-safe; the pipe is non-blocking).
void OnStopSignal(int sig) {
  const int saved_errno = errno;
  const int fd = g_stop_fd.load();
  if (fd >= 0) {
    const unsigned char byte = static_cast<unsigned char>(sig);
    const ssize_t ignored = write(fd, &byte, 1);
    (void)ignored;
  }
  errno = saved_errno;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StreamStopper>> StreamStopper::Start(std::function<void()> stop,
                                                                    absl::Duration timeout) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno, "make the signal pipe");
  }
  std::unique_ptr<StreamStopper> stopper(new StreamStopper(fds[0], fds[1]));
  g_stop_fd.store(fds[1]);
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  for (Handler& h : stopper->handlers_) {
    if (sigaction(h.sig, nullptr, &h.old) != 0 || h.old.sa_handler == SIG_IGN) continue;
    h.installed = sigaction(h.sig, &action, &h.old) == 0;
  }
  StreamStopper* self = stopper.get();
  stopper->thread_ = std::thread(
      [self, stop = std::move(stop), timeout] { self->Run(stop, timeout); });
  return stopper;
}

StreamStopper::~StreamStopper() {
  for (Handler& h : handlers_) {
    if (h.installed) sigaction(h.sig, &h.old, nullptr);
  }
  g_stop_fd.store(-1);
  const unsigned char quit = 0;  // Not a signal number: "end the thread".
  const ssize_t ignored = write(write_fd_, &quit, 1);
  (void)ignored;
  if (thread_.joinable()) thread_.join();
  close(read_fd_);
  close(write_fd_);
}

void StreamStopper::Run(const std::function<void()>& stop, absl::Duration timeout) {
  const bool has_deadline = timeout > absl::ZeroDuration();
  const absl::Time deadline = has_deadline ? absl::Now() + timeout : absl::InfiniteFuture();
  while (true) {
    int wait_ms = -1;
    if (has_deadline) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        timed_out_.store(true);
        stop();
        return;
      }
      // Rounded up, so that the wake-up is at or after the deadline.
      wait_ms = static_cast<int>(
          std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, INT_MAX));
    }
    pollfd p = {read_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return;     // Not expected; the stream can still end by itself.
    if (ready == 0) continue;  // The deadline, checked above.
    unsigned char byte = 0;
    if (read(read_fd_, &byte, 1) != 1) continue;
    if (byte == 0) return;  // The destructor: the stream ended by itself.
    stop_signal_.store(byte);
    stop();
    return;
  }
}

}  // namespace smolvm::cli
