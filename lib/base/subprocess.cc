#include "lib/base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"

extern char** environ;

namespace smolvm {
namespace {

// Appends to `out`, keeping at most `cap` bytes (the newest ones).
void AppendBounded(std::string& out, const char* data, size_t n, size_t cap) {
  out.append(data, n);
  if (out.size() > cap) out.erase(0, out.size() - cap);
}

}  // namespace

std::string TailOf(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::string tail = text.substr(text.size() - max_bytes);
  if (auto nl = tail.find('\n'); nl != std::string::npos && nl + 1 < tail.size()) {
    tail.erase(0, nl + 1);
  }
  return tail;
}

absl::StatusOr<SubprocessResult> RunSubprocess(
    const std::vector<std::string>& argv, const SubprocessOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("run: empty argv");
  if (options.cancelled && options.cancelled()) {
    return absl::CancelledError(absl::StrCat(argv[0], " was not started: cancelled"));
  }
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  // Everything the child needs is built before fork: only async-signal-safe
  // calls happen between fork and exec.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<std::string> env_storage = options.extra_env;
  std::vector<char*> cenv;
  // extra_env wins over the daemon's own value of the same variable.
  auto overridden = [&](const char* entry) {
    for (const auto& e : env_storage) {
      size_t eq = e.find('=');
      if (eq != std::string::npos && strncmp(entry, e.c_str(), eq + 1) == 0) return true;
    }
    return false;
  };
  for (char** e = environ; *e; ++e) {
    if (!overridden(*e)) cenv.push_back(*e);
  }
  for (auto& e : env_storage) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int stderr_file = -1;
  if (!options.stderr_path.empty()) {
    stderr_file = open(options.stderr_path.c_str(),
                       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (stderr_file < 0) {
      if (devnull >= 0) close(devnull);
      return absl::ErrnoToStatus(errno, absl::StrCat("open ", options.stderr_path));
    }
  }

  pid_t pid = fork();
  if (pid < 0) {
    if (devnull >= 0) close(devnull);
    return absl::ErrnoToStatus(errno, absl::StrCat("fork for ", argv[0]));
  }
  if (pid == 0) {
    setpgid(0, 0);
    // Restore default signal dispositions the daemon may have changed.
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(devnull, 0);
    dup2(out_w.get(), 1);
    dup2(stderr_file >= 0 ? stderr_file : err_w.get(), 2);
    close_range(3, ~0U, 0);
    execvpe(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "exec failed\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  // Also set in the parent: a timeout may fire before the child ran setpgid,
  // and kill(-pid) must find the group.
  setpgid(pid, pid);
  if (devnull >= 0) close(devnull);
  if (stderr_file >= 0) close(stderr_file);
  out_w.Reset();
  err_w.Reset();

  SubprocessResult result;
  absl::Time deadline = absl::Now() + options.timeout;
  bool timed_out = false;
  bool cancelled = false;
  // With a cancel check, poll wakes up often enough to notice it.
  constexpr absl::Duration kCancelPoll = absl::Milliseconds(50);
  auto check_cancel = [&] {
    if (options.cancelled && options.cancelled()) cancelled = true;
    return cancelled;
  };
  pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      timed_out = true;
      break;
    }
    if (check_cancel()) break;
    if (options.cancelled) left = std::min(left, kCancelPoll);
    int rc = poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        AppendBounded(i == 0 ? result.stdout_text : result.stderr_text, buf,
                      n, options.max_output_bytes);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  // The child may have closed its output and still be running: the
  // timeout covers the wait for its exit too.
  int wstatus = 0;
  bool reaped = false;
  while (!timed_out && !cancelled) {
    pid_t r = waitpid(pid, &wstatus, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) {
      reaped = true;
      break;
    }
    if (absl::Now() >= deadline) {
      timed_out = true;
      break;
    }
    if (check_cancel()) break;
    usleep(2000);
  }
  if (timed_out || cancelled) {
    if (kill(-pid, SIGKILL) != 0) kill(pid, SIGKILL);
  }
  if (!reaped) {
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
  }
  if (!options.stderr_path.empty()) {
    if (auto text = ReadFileToString(options.stderr_path, 16 << 20); text.ok()) {
      result.stderr_text = TailOf(*text, options.max_output_bytes);
    }
  }
  if (cancelled) {
    return absl::CancelledError(absl::StrCat(argv[0], " was cancelled and killed: ",
                                             TailOf(result.stderr_text, 2000)));
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(
        argv[0], " did not finish within ", absl::FormatDuration(options.timeout),
        " and was killed: ", TailOf(result.stderr_text, 2000)));
  }
  if (WIFEXITED(wstatus)) {
    result.exit_code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    result.term_signal = WTERMSIG(wstatus);
  }
  if (result.exit_code == 127 && result.stderr_text == "exec failed\n") {
    return absl::NotFoundError(
        absl::StrCat("run ", argv[0], ": program not found or not executable"));
  }
  return result;
}

absl::StatusOr<SubprocessResult> RunChecked(const std::vector<std::string>& argv,
                                            const SubprocessOptions& options) {
  auto result = RunSubprocess(argv, options);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    std::string why = result->term_signal != 0
                          ? absl::StrCat("was killed by signal ", result->term_signal)
                          : absl::StrCat("exited with ", result->exit_code);
    return absl::InternalError(absl::StrCat(
        absl::StrJoin(argv, " "), " ", why, ": ",
        TailOf(result->stderr_text + result->stdout_text, 2000)));
  }
  return result;
}

}  // namespace smolvm
