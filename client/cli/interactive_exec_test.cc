// Unit tests of the interactive exec machinery (client/cli/): RawTerminal on
// a pseudo-terminal (restored on destruction and on SIGTERM), and the
// session loop against a fake ExecSession that behaves like `cat`: stdin
// streamed and ended, the loop ending while our stdin is still open,
// signals relayed (a second SIGINT gives up), resizes on SIGWINCH.

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "client/cli/interactive_exec.h"
#include "client/cli/raw_terminal.h"

namespace smolvm::cli {
namespace {

// Pty is a pseudo-terminal pair, closed on destruction.
struct Pty {
  int master = -1;
  int slave = -1;
  Pty() {
    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) return;
    slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  }
  ~Pty() {
    if (slave >= 0) close(slave);
    if (master >= 0) close(master);
  }
  void SetSize(unsigned short rows, unsigned short cols) const {
    winsize size = {};
    size.ws_row = rows;
    size.ws_col = cols;
    ioctl(master, TIOCSWINSZ, &size);
  }
};

bool IsCanonical(int fd) {
  termios t;
  return tcgetattr(fd, &t) == 0 && (t.c_lflag & ICANON) != 0 && (t.c_lflag & ECHO) != 0;
}

TEST(RawTerminalTest, RawWhileItLivesThenRestored) {
  Pty pty;
  ASSERT_GE(pty.slave, 0);
  ASSERT_TRUE(IsCanonical(pty.slave));
  {
    absl::StatusOr<std::unique_ptr<RawTerminal>> raw = RawTerminal::Enter(pty.slave);
    ASSERT_TRUE(raw.ok()) << raw.status();
    EXPECT_FALSE(IsCanonical(pty.slave));
  }
  EXPECT_TRUE(IsCanonical(pty.slave));

  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EXPECT_EQ(RawTerminal::Enter(fds[0]).status().code(), absl::StatusCode::kFailedPrecondition);
  close(fds[0]);
  close(fds[1]);
}

// SIGTERM while raw: the terminal is restored and the process still dies
// of SIGTERM.
TEST(RawTerminalTest, RestoredWhenKilled) {
  Pty pty;
  ASSERT_GE(pty.slave, 0);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    absl::StatusOr<std::unique_ptr<RawTerminal>> raw = RawTerminal::Enter(pty.slave);
    const char byte = raw.ok() ? 'r' : 'x';
    if (write(ready[1], &byte, 1) != 1) _exit(2);
    while (true) pause();
  }
  close(ready[1]);
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  ASSERT_EQ(byte, 'r');
  EXPECT_FALSE(IsCanonical(pty.slave));
  kill(child, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
  EXPECT_TRUE(IsCanonical(pty.slave));
}

TEST(TerminalSizeTest, ReadsTheSize) {
  Pty pty;
  ASSERT_GE(pty.slave, 0);
  pty.SetSize(30, 100);
  uint32_t rows = 0, cols = 0;
  ASSERT_TRUE(TerminalSize(pty.slave, &rows, &cols));
  EXPECT_EQ(rows, 30u);
  EXPECT_EQ(cols, 100u);
  pty.SetSize(2000, 5000);
  ASSERT_TRUE(TerminalSize(pty.slave, &rows, &cols));
  EXPECT_EQ(rows, 1000u);
  EXPECT_EQ(cols, 1000u);
  EXPECT_FALSE(TerminalSize(-1, &rows, &cols));
}

// FakeSession is `cat` behind the ExecSession interface: stdin comes back
// as stdout, close_stdin ends it with `exit_code`. Everything it is asked
// is recorded.
class FakeSession : public ExecSession {
 public:
  absl::StatusOr<v1::ExecResponse> next() override {
    absl::MutexLock lock(&mu_);
    ++next_calls_;
    mu_.Await(absl::Condition(
        +[](FakeSession* s) { return s->cancelled_ || !s->queue_.empty(); }, this));
    if (queue_.empty()) return absl::CancelledError("cancelled");
    v1::ExecResponse response = std::move(queue_.front());
    queue_.pop_front();
    return response;
  }
  absl::Status write_stdin(absl::string_view data) override {
    absl::MutexLock lock(&mu_);
    v1::ExecResponse response;
    response.set_stdout(std::string(data));
    queue_.push_back(std::move(response));
    return absl::OkStatus();
  }
  absl::Status close_stdin() override {
    absl::MutexLock lock(&mu_);
    ++closes_;
    if (exit_on_close_) PushExitLocked(0);
    return absl::OkStatus();
  }
  absl::Status signal(int sig) override {
    absl::MutexLock lock(&mu_);
    signals_.push_back(sig);
    return absl::OkStatus();
  }
  absl::Status resize(uint32_t rows, uint32_t cols) override {
    absl::MutexLock lock(&mu_);
    resizes_.emplace_back(rows, cols);
    return absl::OkStatus();
  }
  void cancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }

  void PushExit(int code) {
    absl::MutexLock lock(&mu_);
    PushExitLocked(code);
  }
  void set_exit_on_close(bool on) {
    absl::MutexLock lock(&mu_);
    exit_on_close_ = on;
  }
  // Waits (up to 10 s) until `done` holds.
  bool WaitFor(bool (*done)(FakeSession*)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(done, this), absl::Seconds(10));
  }
  int closes() {
    absl::MutexLock lock(&mu_);
    return closes_;
  }
  std::vector<int> signals() {
    absl::MutexLock lock(&mu_);
    return signals_;
  }
  std::vector<std::pair<uint32_t, uint32_t>> resizes() {
    absl::MutexLock lock(&mu_);
    return resizes_;
  }
  bool cancelled() {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

  // For WaitFor (called with mu_ held).
  int next_calls_ = 0;
  std::vector<int> signals_;
  std::vector<std::pair<uint32_t, uint32_t>> resizes_;

 private:
  void PushExitLocked(int code) {
    v1::ExecResponse response;
    response.mutable_exit()->set_exit_code(code);
    queue_.push_back(std::move(response));
  }

  absl::Mutex mu_;
  std::deque<v1::ExecResponse> queue_;
  bool exit_on_close_ = true;
  bool cancelled_ = false;
  int closes_ = 0;
};

// Pipe is a pipe, closed on destruction; Drain reads what is in it.
struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() {
    if (pipe2(fds, O_CLOEXEC) != 0) fds[0] = fds[1] = -1;
  }
  ~Pipe() { CloseRead(), CloseWrite(); }
  void CloseRead() {
    if (fds[0] >= 0) close(fds[0]);
    fds[0] = -1;
  }
  void CloseWrite() {
    if (fds[1] >= 0) close(fds[1]);
    fds[1] = -1;
  }
  std::string Drain() {
    CloseWrite();
    std::string all;
    char buffer[4096];
    ssize_t n;
    while ((n = read(fds[0], buffer, sizeof buffer)) > 0) all.append(buffer, n);
    return all;
  }
};

TEST(RunSessionTest, StreamsStdinAndEndsAtEof) {
  FakeSession session;
  Pipe in, out;
  ASSERT_EQ(write(in.fds[1], "a\nb\n", 4), 4);
  in.CloseWrite();
  SessionIo io;
  io.in = in.fds[0];
  io.out = out.fds[1];
  absl::StatusOr<ExecExit> exit = RunSession(session, io);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->ok());
  EXPECT_EQ(session.closes(), 1);
  EXPECT_EQ(out.Drain(), "a\nb\n");
}

// The command exits while our stdin stays open with nothing to read: the
// loop returns at once, without closing the command's stdin.
TEST(RunSessionTest, EndsWhileStdinIsOpen) {
  FakeSession session;
  session.PushExit(3);
  Pipe in, out;
  SessionIo io;
  io.in = in.fds[0];
  io.out = out.fds[1];
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<ExecExit> exit = RunSession(session, io);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  EXPECT_EQ(session.closes(), 0);
}

TEST(RunSessionTest, WithoutInputStdinEndsAtOnce) {
  FakeSession session;
  Pipe out;
  SessionIo io;
  io.in = -1;
  io.out = out.fds[1];
  absl::StatusOr<ExecExit> exit = RunSession(session, io);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(session.closes(), 1);
}

// SIGTERM and a first SIGINT go to the command; a second SIGINT within 2 s
// cancels the call, which is reported as SIGINT's end (exit 130).
TEST(RunSessionTest, RelaysSignalsAndASecondInterruptGivesUp) {
  FakeSession session;
  session.set_exit_on_close(false);
  Pipe out;
  SessionIo io;
  io.in = -1;
  io.out = out.fds[1];
  absl::StatusOr<ExecExit> exit;
  std::thread loop([&] { exit = RunSession(session, io); });
  // next() is called once the handlers are in place.
  ASSERT_TRUE(session.WaitFor(+[](FakeSession* s) { return s->next_calls_ > 0; }));
  kill(getpid(), SIGTERM);
  ASSERT_TRUE(session.WaitFor(+[](FakeSession* s) { return s->signals_.size() == 1; }));
  kill(getpid(), SIGINT);
  ASSERT_TRUE(session.WaitFor(+[](FakeSession* s) { return s->signals_.size() == 2; }));
  kill(getpid(), SIGINT);
  loop.join();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal, SIGINT);
  EXPECT_TRUE(session.cancelled());
  EXPECT_EQ(session.signals(), (std::vector<int>{SIGTERM, SIGINT}));
}

// The size is sent when it changed since the session opened, and again on
// SIGWINCH.
TEST(RunSessionTest, ResizesOnSigwinch) {
  Pty pty;
  ASSERT_GE(pty.slave, 0);
  pty.SetSize(30, 100);
  FakeSession session;
  session.set_exit_on_close(false);
  Pipe out;
  SessionIo io;
  io.in = -1;
  io.out = out.fds[1];
  io.terminal = pty.slave;
  io.rows = 24;
  io.cols = 80;
  absl::StatusOr<ExecExit> exit;
  std::thread loop([&] { exit = RunSession(session, io); });
  ASSERT_TRUE(session.WaitFor(+[](FakeSession* s) { return s->next_calls_ > 0; }));
  pty.SetSize(40, 120);
  kill(getpid(), SIGWINCH);
  ASSERT_TRUE(session.WaitFor(+[](FakeSession* s) { return s->resizes_.size() == 2; }));
  session.PushExit(0);
  loop.join();
  ASSERT_TRUE(exit.ok()) << exit.status();
  using Size = std::pair<uint32_t, uint32_t>;
  EXPECT_EQ(session.resizes(), (std::vector<Size>{{30, 100}, {40, 120}}));
}

// A reader that went away (`| head -1`): the command is killed and the
// exit is SIGPIPE's.
TEST(RunSessionTest, ClosedStdoutEndsLikeSigpipe) {
  signal(SIGPIPE, SIG_IGN);
  FakeSession session;
  session.set_exit_on_close(false);
  Pipe in, out;
  out.CloseRead();
  ASSERT_EQ(write(in.fds[1], "x", 1), 1);
  SessionIo io;
  io.in = in.fds[0];
  io.out = out.fds[1];
  absl::StatusOr<ExecExit> exit = RunSession(session, io);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal, SIGPIPE);
  EXPECT_TRUE(session.cancelled());
  signal(SIGPIPE, SIG_DFL);
}

}  // namespace
}  // namespace smolvm::cli
