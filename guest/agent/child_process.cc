#include "guest/agent/child_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

#include "lib/agent/frame_codec.h"
#include "lib/base/unique_fd.h"

namespace smolvm::guest {
namespace {

using Clock = std::chrono::steady_clock;

// /.smolvm/bin (the payload's busybox applets) comes last: an image's own
// tools win, and an image without any (a shell-less OCI image) still has
// the basics.
constexpr const char* kDefaultPath = "/usr/sbin:/usr/bin:/sbin:/bin:/.smolvm/bin";
// The shell for files without #!: the image's, else the payload's busybox.
constexpr const char* kImageShell = "/bin/sh";
constexpr const char* kPayloadShell = "/.smolvm/bin/sh";

// What the child writes to the error pipe when it cannot exec.
struct ChildFailure {
  int32_t stage;
  int32_t error;
};
enum : int32_t { kStageSetup = 1, kStageChdir = 2, kStageExec = 3, kStageUser = 4 };

std::string Errno(int error) { return std::strerror(error); }

[[noreturn]] void ChildFail(int error_fd, int32_t stage, int error) {
  ChildFailure failure{stage, error};
  (void)!write(error_fd, &failure, sizeof failure);
  _exit(127);
}

bool Pipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end->Reset(fds[0]);
  write_end->Reset(fds[1]);
  return true;
}

// Candidate paths for argv0, in execvp order, searched in the child's PATH
// (not the agent's: the request may override PATH).
std::vector<std::string> Candidates(const std::string& argv0,
                                    const std::vector<std::string>& env) {
  if (argv0.find('/') != std::string::npos) return {argv0};
  std::string path = kDefaultPath;
  for (const std::string& entry : env) {
    if (entry.rfind("PATH=", 0) == 0) path = entry.substr(5);
  }
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t end = path.find(':', start);
    std::string dir =
        path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (dir.empty()) dir = ".";
    out.push_back(dir + "/" + argv0);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

struct Started {
  pid_t pid = -1;
  UniqueFd pidfd;
  // With a tty, stdout_r is the terminal's master and stdin_w a duplicate
  // of it (closing stdin must not close the terminal); stderr_r is unset.
  UniqueFd stdin_w, stdout_r, stderr_r;
  int tty_master = -1;  // stdout_r's fd while it is open, with a tty
  char veof = 4;        // the terminal's end-of-file character (^D)
};

winsize TtySize(unsigned rows, unsigned cols) {
  winsize size = {};
  // 0 = the traditional terminal; the host bounds real sizes (1-1000).
  size.ws_row = static_cast<unsigned short>(rows == 0 ? 24 : std::min(rows, 0xffffu));
  size.ws_col = static_cast<unsigned short>(cols == 0 ? 80 : std::min(cols, 0xffffu));
  return size;
}

// A new pseudo-terminal: its master and its slave (both close-on-exec, the
// slave not yet anyone's controlling terminal), the slave owned by the user
// who will run on it (as login does, so it can fchmod/mesg it).
std::string OpenTty(const ChildSpec& spec, UniqueFd* master, UniqueFd* slave, int* error) {
  master->Reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master->valid() || grantpt(master->get()) != 0 || unlockpt(master->get()) != 0) {
    *error = errno;
    return "open a pseudo-terminal: " + Errno(errno);
  }
  char name[128];
  if (ptsname_r(master->get(), name, sizeof name) != 0) {
    *error = errno;
    return "ptsname: " + Errno(errno);
  }
  slave->Reset(open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave->valid()) {
    *error = errno;
    return std::string("open ") + name + ": " + Errno(errno);
  }
  // The group stays the terminal's (tty, or root): the user's own group
  // must not write to it.
  if (spec.user.uid != 0 && (fchown(slave->get(), spec.user.uid, static_cast<gid_t>(-1)) != 0 ||
                             fchmod(slave->get(), 0620) != 0)) {
    *error = errno;
    return std::string("chown ") + name + ": " + Errno(errno);
  }
  winsize size = TtySize(spec.tty_rows, spec.tty_cols);
  if (ioctl(master->get(), TIOCSWINSZ, &size) != 0) {
    *error = errno;
    return "set the terminal size: " + Errno(errno);
  }
  return "";
}

// fork + exec. Everything the child touches is prepared here: between fork
// and exec a multi-threaded process may only make async-signal-safe calls.
std::string Start(const ChildSpec& spec, Started* out, int* start_errno) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    *start_errno = EINVAL;
    return "exec: empty argv";
  }
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  // A file without #! (ENOEXEC) runs under /bin/sh, as execvp does, or
  // under the payload's shell in an image without one (decided here: the
  // child may only make async-signal-safe calls).
  const char* shell = access(kImageShell, X_OK) == 0 ? kImageShell : kPayloadShell;
  std::vector<char*> sh_argv = {const_cast<char*>(shell), nullptr};
  sh_argv.insert(sh_argv.end(), argv.begin() + 1, argv.end());
  std::vector<std::string> candidates = Candidates(spec.argv[0], spec.env);
  const char* cwd = spec.cwd.empty() ? "/" : spec.cwd.c_str();

  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w, fail_r, fail_w, tty_slave;
  if (spec.tty) {
    if (std::string error = OpenTty(spec, &out_r, &tty_slave, start_errno); !error.empty()) {
      return error;
    }
    in_w.Reset(fcntl(out_r.get(), F_DUPFD_CLOEXEC, 3));
    if (!in_w.valid() || !Pipe(&fail_r, &fail_w)) {
      *start_errno = errno;
      return "pipe: " + Errno(errno);
    }
  } else if ((spec.stdin_from_input && !Pipe(&in_r, &in_w)) || !Pipe(&out_r, &out_w) ||
             !Pipe(&err_r, &err_w) || !Pipe(&fail_r, &fail_w)) {
    *start_errno = errno;
    return "pipe: " + Errno(errno);
  }

  pid_t pid = fork();
  if (pid < 0) {
    *start_errno = errno;
    return "fork: " + Errno(errno);
  }
  if (pid == 0) {
    // Child.
    int fail = fail_w.get();
    if (setsid() < 0) ChildFail(fail, kStageSetup, errno);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Every disposition back to the default: exec keeps SIG_IGN, and the
    // agent ignores SIGPIPE, and SIGINT/SIGQUIT when a shell started it in
    // the background — a command must die of ^C and of ExecSignal.
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);  // EINVAL: KILL/STOP
    // All pipe fds are >= 3 (main() makes sure 0-2 are open), so dup2 never
    // lands on a source fd; dup2 clears close-on-exec on the targets.
    if (tty_slave.valid()) {
      // The session leader's first terminal: its controlling terminal.
      int tty = tty_slave.get();
      if (ioctl(tty, TIOCSCTTY, 0) != 0 || dup2(tty, 0) < 0 || dup2(tty, 1) < 0 ||
          dup2(tty, 2) < 0) {
        ChildFail(fail, kStageSetup, errno);
      }
    } else {
      int stdin_fd =
          spec.stdin_from_input ? in_r.get() : open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (stdin_fd < 0) ChildFail(fail, kStageSetup, errno);
      if (dup2(stdin_fd, 0) < 0 || dup2(out_w.get(), 1) < 0 || dup2(err_w.get(), 2) < 0) {
        ChildFail(fail, kStageSetup, errno);
      }
    }
    if (int error = SwitchThreadToUser(spec.user); error != 0) {
      ChildFail(fail, kStageUser, error);
    }
    if (chdir(cwd) != 0) ChildFail(fail, kStageChdir, errno);
    int error = ENOENT;
    bool saw_eacces = false;
    for (const std::string& candidate : candidates) {
      execve(candidate.c_str(), argv.data(), envp.data());
      if (errno == ENOEXEC) {
        sh_argv[1] = const_cast<char*>(candidate.c_str());
        execve(shell, sh_argv.data(), envp.data());
      }
      error = errno;
      if (error == EACCES) {
        saw_eacces = true;
      } else if (error != ENOENT && error != ENOTDIR && error != ESTALE && error != ENODEV &&
                 error != ETIMEDOUT) {
        break;
      }
    }
    if (saw_eacces && (error == ENOENT || error == ENOTDIR)) error = EACCES;
    ChildFail(fail, kStageExec, error);
  }

  // Parent.
  fail_w.Reset();
  in_r.Reset();
  out_w.Reset();
  err_w.Reset();
  tty_slave.Reset();  // the master reads EIO once the child's side is all closed
  ChildFailure failure{};
  ssize_t n;
  do {
    n = read(fail_r.get(), &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    *start_errno = failure.error;
    switch (failure.stage) {
      case kStageUser:
        return "switch to uid " + std::to_string(spec.user.uid) + ": " + Errno(failure.error);
      case kStageChdir:
        return "chdir " + std::string(cwd) + ": " + Errno(failure.error);
      case kStageExec:
        return "exec " + spec.argv[0] + ": " + Errno(failure.error);
      default:
        return "start " + spec.argv[0] + ": " + Errno(failure.error);
    }
  }
  // n == 0: the exec succeeded and closed the pipe.
  out->pid = pid;
  out->pidfd.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!out->pidfd.valid()) {
    int error = errno;
    kill(-pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    *start_errno = error;
    return "pidfd_open: " + Errno(error);
  }
  // (With a tty this also makes the master's reads non-blocking: one open
  // file; the pump handles EAGAIN.)
  if (in_w.valid()) fcntl(in_w.get(), F_SETFL, O_NONBLOCK);
  if (spec.tty) {
    out->tty_master = out_r.get();
    termios attrs;
    if (tcgetattr(out_r.get(), &attrs) == 0 && attrs.c_cc[VEOF] != 0) {
      out->veof = static_cast<char>(attrs.c_cc[VEOF]);
    }
  }
  out->stdin_w = std::move(in_w);
  out->stdout_r = std::move(out_r);
  out->stderr_r = std::move(err_r);
  return "";
}

// Calls fn(pid, process group, session) for every process in /proc.
template <typename Fn>
void ForEachProcess(Fn fn) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) continue;
    char stat[512];
    ssize_t n = read(fd.get(), stat, sizeof stat - 1);
    if (n <= 0) continue;
    stat[n] = '\0';
    // "pid (comm) state ppid pgrp session ...": comm may hold anything,
    // so parse after its last ')'.
    const char* rest = std::strrchr(stat, ')');
    char state;
    int ppid, pgrp, session;
    if (rest != nullptr &&
        std::sscanf(rest + 1, " %c %d %d %d", &state, &ppid, &pgrp, &session) == 4) {
      fn(static_cast<pid_t>(pid), static_cast<pid_t>(pgrp), static_cast<pid_t>(session));
    }
  }
  closedir(proc);
}

// SIGKILL to every process of session `sid`. The child leads a session of
// its own, which only its descendants can be in: this also ends the jobs a
// shell moved to process groups of their own (`sleep 100 &` in an
// interactive shell), which killing the child's group would leave behind.
// The id stays the session's (the kernel does not reuse a pid number while
// it names a session or group with members), also after the child's reap.
// Scanned again while it finds any: a member forking fast may place a
// child at a pid the scan had passed.
void KillSession(pid_t sid) {
  for (int round = 0; round < 8; ++round) {
    bool found = false;
    ForEachProcess([&](pid_t pid, pid_t, pid_t session) {
      if (session != sid) return;
      found = true;
      kill(pid, SIGKILL);
    });
    if (!found) return;
  }
}

// Whether process group `pgrp` has a member in session `sid`: a terminal
// keeps naming its foreground group after the group's last member exited,
// and that number may have become another group's since.
bool GroupInSession(pid_t pgrp, pid_t sid) {
  bool found = false;
  ForEachProcess([&](pid_t, pid_t group, pid_t session) {
    if (group == pgrp && session == sid) found = true;
  });
  return found;
}

int MillisUntil(Clock::time_point t) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

}  // namespace

std::vector<std::string> BuildEnv(
    const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::map<std::string, std::string> env = {
      {"PATH", kDefaultPath}, {"HOME", "/root"}, {"TERM", "dumb"}};
  for (const auto& [key, value] : overrides) env[key] = value;
  std::vector<std::string> out;
  for (const auto& [key, value] : env) out.push_back(key + "=" + value);
  return out;
}

ChildOutcome RunChild(const ChildSpec& spec, OpInput* input, uint32_t timeout_ms,
                      const std::string& abort_label, const ChildHooks& hooks) {
  ChildOutcome outcome;
  Started child;
  outcome.start_error = Start(spec, &child, &outcome.start_errno);
  if (!outcome.start_error.empty()) return outcome;
  if (hooks.on_started) hooks.on_started(child.pid);

  const bool has_deadline = timeout_ms > 0;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  Clock::time_point drain_until;
  bool exited = false;
  bool killed = false;
  int status = 0;
  std::string pending;  // stdin chunk being written
  size_t pending_off = 0;
  bool veof_queued = false;       // with a tty: the input's eof became ^D
  bool pending_is_veof = false;   // ... and is being written (not the host's bytes)
  char last_typed = 0;            // the last byte written to a tty (0: none)
  // With a tty: every slave fd was closed while the child runs (a daemon
  // redirecting to /dev/null, a program closing 0-2 before it exits). The
  // master is no longer polled (it reads EIO) but kept open until the
  // reap: its last close would hang the terminal up and SIGHUP the child.
  bool tty_hung_up = false;
  uint64_t consumed = 0;          // stdin bytes written or dropped
  uint64_t consumed_reported = 0;
  std::vector<char> buffer(agent::kMaxChunkBytes);

  auto kill_group = [&] {
    if (!killed && !exited) {
      kill(-child.pid, SIGKILL);
      KillSession(child.pid);
    }
    killed = true;
  };

  for (;;) {
    if (input != nullptr && !exited) {
      if (input->overflowed() && outcome.abort_error.empty()) {
        outcome.abort_error = abort_label + ": more than 16 MiB queued";
        kill_group();
      } else if (input->cancelled()) {
        kill_group();
      }
    }
    // Signals and terminal sizes, only while the child is not reaped (its
    // pid, and so its group's id, may be reused after).
    OpInput::Control control;
    while (input != nullptr && input->TryPopControl(&control)) {
      if (exited) continue;
      if (control.signal != 0) {
        // With a tty the foreground job gets it, as from a key: the keys'
        // signals through the terminal itself (TIOCSIG: the kernel's own
        // reference to the group), others to the foreground group if it
        // still has a member in the child's session; else the child's.
        const int sig = control.signal;
        pid_t group = child.pid;
        if (child.tty_master >= 0) {
          if ((sig == SIGINT || sig == SIGQUIT || sig == SIGTSTP) &&
              ioctl(child.tty_master, TIOCSIG, sig) == 0) {
            continue;
          }
          const pid_t foreground = tcgetpgrp(child.tty_master);
          if (foreground > 0 && GroupInSession(foreground, child.pid)) group = foreground;
        }
        kill(-group, sig);
      } else if (child.tty_master >= 0) {
        winsize size = TtySize(control.rows, control.cols);
        ioctl(child.tty_master, TIOCSWINSZ, &size);
      }
    }
    // Feed stdin as far as the pipe takes it; never block here.
    if (input != nullptr) {
      if (!child.stdin_w.valid() || exited) {
        child.stdin_w.Reset();
        if (!pending_is_veof) consumed += pending.size() - pending_off;
        pending.clear();
        pending_off = 0;
        std::string discard;
        while (input->TryPop(&discard) == OpInput::Pop::kData) consumed += discard.size();
      } else {
        for (;;) {
          if (pending_off == pending.size()) {
            pending.clear();
            pending_off = 0;
            OpInput::Pop pop = input->TryPop(&pending);
            if (pop == OpInput::Pop::kEof && child.tty_master >= 0 && !veof_queued) {
              // A terminal has no end of input; its VEOF character ends a
              // read, which programs take as the end (closing our side
              // would not: the master stays open for the output).
              veof_queued = true;
              pending_is_veof = true;
              // After a partial line the first ^D only ends that read.
              pending.assign(last_typed == '\n' || last_typed == 0 ? 1 : 2, child.veof);
              continue;
            }
            pending_is_veof = false;
            if (pop == OpInput::Pop::kEof) child.stdin_w.Reset();
            if (pop != OpInput::Pop::kData) break;
          }
          ssize_t n = write(child.stdin_w.get(), pending.data() + pending_off,
                            pending.size() - pending_off);
          if (n > 0) {
            pending_off += static_cast<size_t>(n);
            if (!pending_is_veof) {
              outcome.stdin_bytes += static_cast<uint64_t>(n);
              consumed += static_cast<uint64_t>(n);
              last_typed = pending[pending_off - 1];
            }
          } else if (n < 0 && errno == EINTR) {
            continue;
          } else if (n < 0 && errno == EAGAIN) {
            break;
          } else {
            child.stdin_w.Reset();  // EPIPE: the child closed its stdin
            if (!pending_is_veof) consumed += pending.size() - pending_off;
            pending.clear();
            pending_off = 0;
            break;
          }
        }
      }
      if (consumed != consumed_reported && hooks.on_stdin) {
        consumed_reported = consumed;
        hooks.on_stdin(consumed);
      }
    }

    if (exited) {
      if (!child.stdout_r.valid() && !child.stderr_r.valid()) break;
      if (Clock::now() >= drain_until) break;
      // A job left behind that keeps writing would drain forever: a cancel
      // (or the host leaving an interactive exec) ends it and the drain.
      if (input != nullptr && input->cancelled()) {
        KillSession(child.pid);
        break;
      }
    } else if (has_deadline && !killed && Clock::now() >= deadline) {
      outcome.timed_out = true;
      kill_group();
    }

    pollfd fds[5];
    int nfds = 0;
    auto add = [&](const UniqueFd& fd, short events) -> int {
      if (!fd.valid()) return -1;
      fds[nfds] = {fd.get(), events, 0};
      return nfds++;
    };
    int out_i = tty_hung_up ? -1 : add(child.stdout_r, POLLIN);
    int err_i = add(child.stderr_r, POLLIN);
    if (pending_off < pending.size()) add(child.stdin_w, POLLOUT);  // retried at the top
    int pid_i = exited ? -1 : add(child.pidfd, POLLIN);
    int wake_i = -1;
    if (input != nullptr) {
      fds[nfds] = {input->wake_fd(), POLLIN, 0};
      wake_i = nfds++;
    }
    int timeout = -1;
    if (exited) {
      timeout = MillisUntil(drain_until);
    } else if (has_deadline && !killed) {
      timeout = MillisUntil(deadline);
    }
    int r = poll(fds, static_cast<nfds_t>(nfds), timeout);
    if (r < 0 && errno != EINTR) break;  // cannot happen with valid fds
    if (r <= 0) continue;

    auto pump = [&](int index, UniqueFd* fd, int stream) {
      if (index < 0 || fds[index].revents == 0) return;
      ssize_t n = read(fd->get(), buffer.data(), buffer.size());
      if (n > 0) {
        hooks.on_output(stream, buffer.data(), static_cast<size_t>(n));
        if (exited) drain_until = Clock::now() + kDrainIdle;
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        // A terminal's master reads EIO once no one holds the slave.
        if (fd->get() == child.tty_master) {
          if (!exited) {
            tty_hung_up = true;  // see its declaration
            return;
          }
          child.tty_master = -1;
        }
        fd->Reset();
      }
    };
    pump(out_i, &child.stdout_r, 1);
    pump(err_i, &child.stderr_r, 2);
    if (wake_i >= 0 && fds[wake_i].revents != 0) input->ClearWake();
    if (pid_i >= 0 && fds[pid_i].revents != 0) {
      pid_t w = waitpid(child.pid, &status, WNOHANG);
      // ECHILD: reaped behind our back (cannot happen with SIGCHLD at its
      // default); the status is lost, do not spin on the readable pidfd.
      bool gone = w == child.pid || (w < 0 && errno == ECHILD);
      if (w < 0) status = 0;
      if (gone) {
        exited = true;
        drain_until = Clock::now() + kDrainIdle;
        child.stdin_w.Reset();
        if (tty_hung_up) {
          child.stdout_r.Reset();
          child.tty_master = -1;
        }
        if (hooks.on_reaped) hooks.on_reaped(status);
      }
    }
  }

  if (!exited) {
    // Only reached if poll failed; do not leave a zombie behind.
    kill(-child.pid, SIGKILL);
    KillSession(child.pid);
    while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (WIFSIGNALED(status)) {
    outcome.signal = WTERMSIG(status);
  } else {
    outcome.exit_code = WEXITSTATUS(status);
  }
  return outcome;
}

}  // namespace smolvm::guest
