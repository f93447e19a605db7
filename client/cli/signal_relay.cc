#include "client/cli/signal_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include "absl/status/status.h"

namespace smolvm::cli {
namespace {

// The write end of the running SignalRelay's pipe, for the handler (-1:
// none).
std::atomic<int> g_relay_fd{-1};
static_assert(std::atomic<int>::is_always_lock_free, "read in a signal handler");

// OnSignal only writes the signal's number to the pipe: write is
// async-signal-safe, and the pipe is non-blocking, so a full pipe drops the
// byte instead of blocking the handler (the relay is behind anyway).
void OnSignal(int sig) {
  const int saved_errno = errno;
  const int fd = g_relay_fd.load();
  if (fd >= 0) {
    const unsigned char byte = static_cast<unsigned char>(sig);
    const ssize_t ignored = write(fd, &byte, 1);
    (void)ignored;
  }
  errno = saved_errno;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SignalRelay>> SignalRelay::Start(
    std::vector<int> signals, std::function<void(int)> on_signal, bool once) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno, "make the signal pipe");
  }
  std::unique_ptr<SignalRelay> relay(new SignalRelay(fds[0], fds[1]));
  g_relay_fd.store(fds[1]);
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a read or write that the signal interrupts on another
  // thread resumes instead of failing with EINTR (poll is never restarted;
  // its callers retry).
  action.sa_flags = SA_RESTART | (once ? SA_RESETHAND : 0);
  for (int sig : signals) {
    Handler h{sig, {}, false};
    if (sigaction(sig, nullptr, &h.old) == 0 && h.old.sa_handler != SIG_IGN) {
      h.installed = sigaction(sig, &action, &h.old) == 0;
    }
    relay->handlers_.push_back(h);
  }
  SignalRelay* self = relay.get();
  relay->thread_ = std::thread([self, on_signal = std::move(on_signal)] { self->Run(on_signal); });
  return relay;
}

SignalRelay::~SignalRelay() {
  for (Handler& h : handlers_) {
    if (h.installed) sigaction(h.sig, &h.old, nullptr);
  }
  g_relay_fd.store(-1);
  const unsigned char quit = 0;  // Not a signal number: "end the thread".
  // The pipe may be full of unread signals; then the thread is reading it
  // and will reach a free slot, so wait for one rather than drop the quit.
  pollfd p = {write_fd_, POLLOUT, 0};
  while (write(write_fd_, &quit, 1) != 1 && (errno == EAGAIN || errno == EINTR)) {
    poll(&p, 1, 100);
  }
  if (thread_.joinable()) thread_.join();
  close(read_fd_);
  close(write_fd_);
}

void SignalRelay::Run(const std::function<void(int)>& on_signal) {
  while (true) {
    pollfd p = {read_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return;  // Not expected; signals then go unrelayed.
    unsigned char byte = 0;
    if (read(read_fd_, &byte, 1) != 1) continue;
    if (byte == 0) return;  // The destructor.
    on_signal(byte);
  }
}

}  // namespace smolvm::cli
