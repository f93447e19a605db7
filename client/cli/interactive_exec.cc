#include "client/cli/interactive_exec.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/raw_terminal.h"
#include "client/cli/signal_relay.h"

namespace smolvm::cli {
namespace {

// A second SIGINT this soon after the first gives up on the command; the
// first is the command's to handle (it may ignore it, as a shell does).
constexpr absl::Duration kInterruptAgain = absl::Seconds(2);
// How long the stdin pump may take to notice that the session ended before
// it is taken to be stuck in write_stdin (the command exited without
// reading its input, so the daemon holds the write back) and the call is
// cancelled to free it.
constexpr auto kPumpStopGrace = std::chrono::milliseconds(500);
// TerminalSize.rows/cols: at most 1000 (vm_service.proto).
constexpr uint32_t kMaxCells = 1000;

// WriteAll writes all of `data` to `fd` (which may be non-blocking: a
// terminal some other program left so); 0, or the errno of the failure.
int WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, -1);
      continue;
    }
    if (n < 0) return errno;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

// StdinPump copies `in` to the session on its own thread: each chunk as it
// is read (a line on a cooked terminal, a key on a raw one) with
// write_stdin, then close_stdin at EOF. It poll()s `in` together with a stop
// pipe, so that it can be ended while our stdin has nothing to read.
class StdinPump {
 public:
  static absl::StatusOr<std::unique_ptr<StdinPump>> Start(ExecSession& session, int in) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "make the stop pipe");
    std::unique_ptr<StdinPump> pump(new StdinPump(session, in, fds[0], fds[1]));
    StdinPump* self = pump.get();
    pump->thread_ = std::thread([self] {
      self->Run();
      self->done_.set_value();
    });
    return pump;
  }

  // Ends the thread: wakes it from poll(), and if it is still busy after
  // kPumpStopGrace (blocked in write_stdin), cancels the call, which makes
  // the write return. Then joins it.
  ~StdinPump() {
    const unsigned char stop = 1;
    const ssize_t ignored = write(stop_write_, &stop, 1);
    (void)ignored;
    if (done_future_.wait_for(kPumpStopGrace) != std::future_status::ready) session_.cancel();
    thread_.join();
    close(stop_read_);
    close(stop_write_);
  }
  StdinPump(const StdinPump&) = delete;
  StdinPump& operator=(const StdinPump&) = delete;

 private:
  StdinPump(ExecSession& session, int in, int stop_read, int stop_write)
      : session_(session), in_(in), stop_read_(stop_read), stop_write_(stop_write),
        done_future_(done_.get_future()) {}

  void Run() {
    char buffer[64 * 1024];
    while (true) {
      pollfd fds[2] = {{in_, POLLIN, 0}, {stop_read_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;  // Not expected: taken as the end of our input.
      }
      if (fds[1].revents != 0) return;  // The session is over: nothing more to send.
      if ((fds[0].revents & POLLNVAL) != 0) break;
      if (fds[0].revents == 0) continue;
      const ssize_t n = read(in_, buffer, sizeof buffer);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      // EOF, or an error such as EIO from a terminal that hung up: either
      // way the end of our input.
      if (n <= 0) break;
      // A failed write means that the call ended; next() reports why.
      if (!session_.write_stdin(absl::string_view(buffer, static_cast<size_t>(n))).ok()) return;
    }
    session_.close_stdin().IgnoreError();  // Fails only if the call ended (next() says why).
  }

  ExecSession& session_;
  const int in_;
  const int stop_read_;
  const int stop_write_;
  std::promise<void> done_;
  std::future<void> done_future_;
  std::thread thread_;
};

// CopyOutput writes the session's output to `io` until the exit. When our
// stdout is a pipe whose reader has gone (`... | head -1`), the command is
// killed and the exit is SIGPIPE's, as a shell pipeline's writer would end.
absl::StatusOr<ExecExit> CopyOutput(ExecSession& session, const SessionIo& io) {
  while (true) {
    absl::StatusOr<v1::ExecResponse> response = session.next();
    if (!response.ok()) return response.status();
    int failed = 0;  // WriteAll's errno.
    switch (response->event_case()) {
      case v1::ExecResponse::kStdout:
        failed = WriteAll(io.out, response->stdout());
        break;
      case v1::ExecResponse::kStderr:
        failed = WriteAll(io.err, response->stderr());
        break;
      case v1::ExecResponse::kExit: {
        ExecExit exit;
        exit.exit_code = response->exit().exit_code();
        exit.signal = response->exit().signal();
        exit.timed_out = response->exit().timed_out();
        return exit;
      }
      default:  // Nothing set: an event of a newer daemon; skip it.
        break;
    }
    if (failed != 0) {
      session.cancel();
      if (failed == EPIPE) {
        ExecExit exit;
        exit.signal = SIGPIPE;
        return exit;
      }
      return absl::ErrnoToStatus(failed, "write the command's output");
    }
  }
}

// ControlSender sends signals and resizes to the session from a thread of
// its own: a send waits behind stdin the command has not read (the writers
// of a session take turns, and the daemon applies requests in order), and
// the signal relay's thread must never wait, or a second ^C could not give
// up. Controls queued beyond kMaxQueued are dropped (the one being sent is
// stuck; more of the same change nothing).
class ControlSender {
 public:
  static constexpr size_t kMaxQueued = 16;

  explicit ControlSender(ExecSession& session)
      : session_(session), thread_([this] { Run(); }) {}
  ~ControlSender() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();  // The call has ended (or been cancelled): a send returns.
  }
  ControlSender(const ControlSender&) = delete;
  ControlSender& operator=(const ControlSender&) = delete;

  // A signal (rows/cols 0) or a size (signal 0). Never blocks.
  void Push(int signal, uint32_t rows = 0, uint32_t cols = 0) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() >= kMaxQueued) return;
      queue_.push_back({signal, rows, cols});
    }
    cv_.notify_all();
  }

 private:
  struct Control {
    int signal;
    uint32_t rows, cols;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return done_ || !queue_.empty(); });
      if (done_) return;
      const Control c = queue_.front();
      queue_.pop_front();
      lock.unlock();
      // Errors mean the call ended, which next() reports.
      if (c.signal != 0) {
        session_.signal(c.signal).IgnoreError();
      } else {
        session_.resize(c.rows, c.cols).IgnoreError();
      }
      lock.lock();
    }
  }

  ExecSession& session_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Control> queue_;  // guarded by mu_
  bool done_ = false;          // guarded by mu_
  std::thread thread_;
};

}  // namespace

bool TerminalSize(int fd, uint32_t* rows, uint32_t* cols) {
  winsize size = {};
  if (fd < 0 || ioctl(fd, TIOCGWINSZ, &size) != 0 || size.ws_row == 0 || size.ws_col == 0) {
    return false;
  }
  *rows = std::min<uint32_t>(size.ws_row, kMaxCells);
  *cols = std::min<uint32_t>(size.ws_col, kMaxCells);
  return true;
}

absl::StatusOr<ExecExit> RunSession(ExecSession& session, const SessionIo& io) {
  // The relay's callback runs on its thread only, so last_interrupt needs
  // no lock; gave_up is read here once the relay has stopped.
  absl::Time last_interrupt = absl::InfinitePast();
  std::atomic<bool> gave_up{false};
  auto controls = std::make_unique<ControlSender>(session);
  // Never blocks (see ControlSender): giving up works whatever the sends.
  const auto on_signal = [&](int sig) {
    if (sig == SIGWINCH) {
      uint32_t rows = 0, cols = 0;
      if (TerminalSize(io.terminal, &rows, &cols)) controls->Push(0, rows, cols);
      return;
    }
    if (sig == SIGINT) {
      const absl::Time now = absl::Now();
      if (now - last_interrupt < kInterruptAgain) {
        gave_up = true;
        session.cancel();
        return;
      }
      last_interrupt = now;
    }
    controls->Push(sig);
  };
  std::vector<int> signals = {SIGINT};
  if (!io.raw) signals.insert(signals.end(), {SIGTERM, SIGHUP});
  if (io.terminal >= 0) signals.push_back(SIGWINCH);
  absl::StatusOr<std::unique_ptr<SignalRelay>> relay = SignalRelay::Start(signals, on_signal);
  if (!relay.ok()) return relay.status();
  // A resize between reading the size and installing the handler is sent
  // now, or the guest would keep the old size until the next one.
  if (uint32_t rows = 0, cols = 0;
      TerminalSize(io.terminal, &rows, &cols) && (rows != io.rows || cols != io.cols)) {
    controls->Push(0, rows, cols);
  }

  std::unique_ptr<StdinPump> pump;
  if (io.in >= 0) {
    absl::StatusOr<std::unique_ptr<StdinPump>> started = StdinPump::Start(session, io.in);
    if (!started.ok()) return started.status();
    pump = *std::move(started);
  } else {
    session.close_stdin().IgnoreError();  // Fails only if the call ended (next() says why).
  }

  absl::StatusOr<ExecExit> exit = CopyOutput(session, io);
  pump.reset();   // Before the relay: the pump may cancel the call, never signal it.
  relay->reset();  // Joins its thread (never blocked: it only queues).
  controls.reset();  // The call is over, so a send in progress returns.
  if (!exit.ok() && gave_up && absl::IsCancelled(exit.status())) {
    // Ctrl-C twice: the call was cancelled, which killed the command;
    // exit as a shell does after an interrupt (130).
    ExecExit interrupted;
    interrupted.signal = SIGINT;
    return interrupted;
  }
  return exit;
}

absl::StatusOr<ExecExit> RunInteractive(const std::string& vm_id, const ClientOptions& client,
                                        const std::vector<std::string>& argv,
                                        const RunOptions& options, InteractiveMode mode) {
  SessionIo io;
  // With fd 0 closed (`smolvmctl ... <&-`) there is no input. Checked before
  // the connection opens, since a socket of ours could then take fd 0.
  const bool stdin_open = fcntl(STDIN_FILENO, F_GETFD) != -1;
  io.in = mode.stream_stdin && stdin_open ? STDIN_FILENO : -1;
  ExecSessionOptions session_options;
  session_options.tty = mode.tty;
  if (mode.tty) {
    // Our terminal: stdin's, else the one we write to (`cmd | smolvmctl
    // vm exec -it`); none leaves the guest's default, 24x80.
    for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
      if (TerminalSize(fd, &io.rows, &io.cols)) {
        io.terminal = fd;
        break;
      }
    }
    session_options.rows = io.rows;
    session_options.cols = io.cols;
    if (const char* term = std::getenv("TERM"); term != nullptr) session_options.term = term;
  }

  absl::StatusOr<SmolVM> vm = SmolVM::attach(vm_id, client);
  if (!vm.ok()) return vm.status();
  absl::StatusOr<std::unique_ptr<ExecSession>> session =
      vm->exec_session(argv, options, session_options);
  if (!session.ok()) return session.status();
  // Raw only when our keys go to a guest terminal: with -t alone, or stdin
  // not a terminal, ours stays as it is and ^C is relayed as SIGINT.
  std::unique_ptr<RawTerminal> raw;
  if (mode.tty && io.in == STDIN_FILENO && isatty(STDIN_FILENO)) {
    absl::StatusOr<std::unique_ptr<RawTerminal>> entered = RawTerminal::Enter(STDIN_FILENO);
    if (!entered.ok()) return entered.status();
    raw = *std::move(entered);
    io.raw = true;
  }
  absl::StatusOr<ExecExit> exit = RunSession(**session, io);
  raw.reset();  // Restored before the caller prints anything.
  return exit;
}

}  // namespace smolvm::cli
