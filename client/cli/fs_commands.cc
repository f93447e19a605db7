// smolvmctl fs stat|ls|mkdir|rm|mv|watch: the file system of a RUNNING VM
// (FilesystemService), as root or as a guest user (--user: its permissions
// apply and a relative PATH starts at its home). Errors keep the guest's
// meaning, so the exit codes are the usual ones: 3 for a missing path, 4
// for an existing target, 5 for a non-empty directory without -r.
//
// `fs watch` streams until Ctrl-C, SIGTERM or its --timeout. The signal
// handler only writes the signal's number to a pipe; a thread of ours reads
// it (or sees the deadline pass) and cancels the watch, so the blocked
// DirWatch::next() returns and the output ends cleanly.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli/yaml.h"
#include "client/cli_format.h"
#include "client/smolvm.h"
#include "smolvm/v1/filesystem_service.pb.h"

namespace smolvm::cli {
namespace {

// The flags of every fs command (only one runs).
struct FsFlags {
  std::string vm_id, path, new_path, user, mode;
  std::uint32_t depth = 1;
  bool long_format = false;
  bool parents = false;
  bool recursive = false;
  bool overwrite = false;
  double timeout_seconds = 0;
  CLI::Option* timeout = nullptr;  // fs watch --timeout.
};

// --- Ending a watch from a signal or a deadline ---------------------------

// The write end of the running WatchStopper's pipe, for the signal handler
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

// WatchStopper calls `stop` from its own thread on the first SIGINT or
// SIGTERM, or once `timeout` (if more than zero) has passed, whichever comes
// first, and then does nothing more. A signal that was ignored when it
// started (a background job's SIGINT) stays ignored; a second Ctrl-C, should
// the stop hang, kills the process as usual. One at a time per process.
// Destroying it restores the handlers and joins the thread: destroy it
// before what `stop` touches.
class WatchStopper {
 public:
  static absl::StatusOr<std::unique_ptr<WatchStopper>> Start(std::function<void()> stop,
                                                             absl::Duration timeout);
  ~WatchStopper();
  WatchStopper(const WatchStopper&) = delete;
  WatchStopper& operator=(const WatchStopper&) = delete;

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

  WatchStopper(int read_fd, int write_fd) : read_fd_(read_fd), write_fd_(write_fd) {}
  void Run(const std::function<void()>& stop, absl::Duration timeout);

  const int read_fd_;
  const int write_fd_;
  Handler handlers_[2] = {{SIGINT, {}, false}, {SIGTERM, {}, false}};
  std::atomic<int> stop_signal_{0};
  std::atomic<bool> timed_out_{false};
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<WatchStopper>> WatchStopper::Start(std::function<void()> stop,
                                                                  absl::Duration timeout) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno, "fs watch: make the signal pipe");
  }
  std::unique_ptr<WatchStopper> stopper(new WatchStopper(fds[0], fds[1]));
  g_stop_fd.store(fds[1]);
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  for (Handler& h : stopper->handlers_) {
    if (sigaction(h.sig, nullptr, &h.old) != 0 || h.old.sa_handler == SIG_IGN) continue;
    h.installed = sigaction(h.sig, &action, &h.old) == 0;
  }
  WatchStopper* self = stopper.get();
  stopper->thread_ = std::thread(
      [self, stop = std::move(stop), timeout] { self->Run(stop, timeout); });
  return stopper;
}

WatchStopper::~WatchStopper() {
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

void WatchStopper::Run(const std::function<void()>& stop, absl::Duration timeout) {
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
    if (ready < 0) return;   // Not expected; the watch can still end by itself.
    if (ready == 0) continue;  // The deadline, checked above.
    unsigned char byte = 0;
    if (read(read_fd_, &byte, 1) != 1) continue;
    if (byte == 0) return;  // The destructor: the watch ended by itself.
    stop_signal_.store(byte);
    stop();
    return;
  }
}

// --- The commands ---------------------------------------------------------

absl::StatusOr<SmolVM> Target(const CliContext& ctx, const FsFlags& f) {
  return SmolVM::attach(f.vm_id, ctx.globals.options());
}

absl::Status RunStat(const CliContext& ctx, const FsFlags& f) {
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::FileEntry> entry = target->stat_path(f.path, f.user);
  if (!entry.ok()) return entry.status();
  return ctx.out.Message(*entry, FileEntryTable({*entry}));
}

absl::Status RunList(const CliContext& ctx, const FsFlags& f) {
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::ListDirResponse> listed = target->list_dir(f.path, f.depth, f.user);
  if (!listed.ok()) return listed.status();
  const std::vector<v1::FileEntry> entries(listed->entries().begin(), listed->entries().end());
  // Paths relative to the listed directory: "a", "a/b" (the daemon resolved
  // PATH, so its absolute form comes from the entries).
  const std::string prefix = ListedDirPrefix(entries);
  absl::Status printed = ctx.out.Message(
      *listed, f.long_format ? FileEntryTable(entries, prefix) : FileEntryNames(entries, prefix));
  if (!printed.ok()) return printed;
  if (listed->truncated()) {
    std::cerr << "smolvmctl: fs ls: truncated after " << entries.size()
              << " entries (the most one call returns); list a subdirectory or a smaller "
                 "--depth\n";
  }
  return absl::OkStatus();
}

absl::Status RunMakeDir(const CliContext& ctx, const FsFlags& f) {
  std::uint32_t mode = 0;
  if (!f.mode.empty()) {
    absl::StatusOr<std::uint32_t> parsed = ParseMode(f.mode);
    if (!parsed.ok()) return parsed.status();
    // 0 on the wire means "the default, 0755": refuse it rather than make
    // something the user did not ask for.
    if (*parsed == 0) {
      return absl::InvalidArgumentError(
          "--mode 0: a directory nobody may enter is not supported; give the bits, e.g. 0700");
    }
    mode = *parsed;
  }
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::MakeDirResponse> made = target->make_dir(f.path, f.parents, mode, f.user);
  if (!made.ok()) return made.status();
  const std::string& made_path = made->entry().path().empty() ? f.path : made->entry().path();
  return ctx.out.Message(*made, absl::StrCat(made->created() ? "created " : "exists ",
                                             EscapeForTerminal(made_path), "\n"));
}

absl::Status RunRemove(const CliContext& ctx, const FsFlags& f) {
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  if (absl::Status s = target->remove_path(f.path, f.recursive, f.user); !s.ok()) return s;
  return ctx.out.Message(v1::RemovePathResponse(),
                         absl::StrCat("removed ", EscapeForTerminal(f.path), "\n"));
}

absl::Status RunMove(const CliContext& ctx, const FsFlags& f) {
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::FileEntry> moved =
      target->rename_path(f.path, f.new_path, f.overwrite, f.user);
  if (!moved.ok()) return moved.status();
  return ctx.out.Message(*moved, absl::StrCat("moved ", EscapeForTerminal(f.path), " -> ",
                                              EscapeForTerminal(moved->path()), "\n"));
}

// PrintEvent writes one event and flushes it: a line of text, a JSON line
// (--output json) or a YAML document (--output yaml).
absl::Status PrintEvent(const CliContext& ctx, const v1::WatchDirEvent& event) {
  const OutputFormat format = ctx.out.format();
  if (format == OutputFormat::kTable) {
    std::cout << WatchEventLine(event) << "\n" << std::flush;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> json = ToJsonLine(event);
  if (!json.ok()) return json.status();
  if (format == OutputFormat::kJson) {
    std::cout << *json << "\n" << std::flush;
  } else {
    // ToJsonLine replaced invalid UTF-8 already, so this parse cannot fail.
    std::cout << "---\n" << ToYaml(nlohmann::ordered_json::parse(*json)) << std::flush;
  }
  return absl::OkStatus();
}

absl::Status RunWatch(CliContext& ctx, const FsFlags& f) {
  // fs watch's own --timeout, else a global one given before `fs` (as for
  // vm exec), else until a signal.
  absl::Duration timeout = absl::ZeroDuration();
  if (f.timeout->count() > 0) {
    timeout = absl::Seconds(f.timeout_seconds);
  } else if (ctx.globals.timeout_given) {
    timeout = absl::Seconds(ctx.globals.timeout_seconds);
  }
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  // Returns once the watch is in place: every change from here on is seen.
  absl::StatusOr<std::unique_ptr<DirWatch>> watch =
      target->watch_dir(f.path, f.recursive, f.user);
  if (!watch.ok()) return watch.status();
  DirWatch& w = **watch;
  if (!ctx.out.structured()) {
    std::cerr << "watching " << EscapeForTerminal(f.path) << "\n" << std::flush;
  }
  absl::StatusOr<std::unique_ptr<WatchStopper>> stopper =
      WatchStopper::Start([&w] { w.cancel(); }, timeout);
  if (!stopper.ok()) return stopper.status();

  absl::Status ended;
  while (true) {
    absl::StatusOr<v1::WatchDirEvent> event = w.next();
    if (!event.ok()) {
      ended = event.status();
      break;
    }
    // watch_dir waited for this one already.
    if (event->type() == v1::WATCH_EVENT_TYPE_WATCHING) continue;
    if (absl::Status s = PrintEvent(ctx, *event); !s.ok()) {
      ended = s;
      w.cancel();
      break;
    }
  }
  const int sig = (*stopper)->stop_signal();
  const bool timed_out = (*stopper)->timed_out();
  stopper->reset();  // Joins its thread, which may still call cancel().

  // Our own cancel is the normal end: exit 0 after --timeout, 128+N after
  // signal N (130 for Ctrl-C), as a shell expects of an interrupted command.
  if (ended.code() == absl::StatusCode::kCancelled && (sig != 0 || timed_out)) {
    if (sig != 0) ctx.exit_code = 128 + sig;
    return absl::OkStatus();
  }
  return ended;
}

// AddTarget adds the VM_ID and --user that every fs command takes.
void AddTarget(CLI::App* cmd, FsFlags& f) {
  cmd->add_option("ID", f.vm_id, "VM id")->required();
  cmd->add_option("--user,-u", f.user,
                  "act as this guest user, name or uid: its permissions apply and a relative "
                  "PATH starts at its home (default root)");
}

}  // namespace

void RegisterFsCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* fs = app.add_subcommand(
      "fs", "inspect and change the file system of a RUNNING VM (paths absolute or relative to "
            "the user's home)");
  fs->require_subcommand(1);
  FsFlags& f = ctx.Make<FsFlags>();

  CLI::App* stat_cmd = fs->add_subcommand(
      "stat", "show one path (a symlink itself, not what it points to): TYPE MODE SIZE OWNER "
              "MTIME PATH");
  AddTarget(stat_cmd, f);
  stat_cmd->add_option("PATH", f.path, "guest path")->required();
  ctx.OnRun(stat_cmd, [&ctx, &f] { return RunStat(ctx, f); });

  CLI::App* ls_cmd = fs->add_subcommand(
      "ls", "list a guest directory, sorted by name, breadth-first with --depth (paths "
            "relative to it; symlinks are not followed)");
  ls_cmd->alias("list");
  AddTarget(ls_cmd, f);
  ls_cmd->add_option("PATH", f.path, "guest directory (default: the user's home)");
  ls_cmd->add_option("--depth", f.depth, "levels below PATH, 1-32 (default 1)")
      ->type_name("N")
      ->check(CLI::Range(1u, 32u));
  ls_cmd->add_flag("-l,--long", f.long_format, "a table: TYPE MODE SIZE OWNER MTIME PATH");
  ctx.OnRun(ls_cmd, [&ctx, &f] { return RunList(ctx, f); });

  CLI::App* mkdir_cmd =
      fs->add_subcommand("mkdir", "make a guest directory, owned by the user");
  AddTarget(mkdir_cmd, f);
  mkdir_cmd->add_option("PATH", f.path, "guest directory to make")->required();
  mkdir_cmd->add_flag("-p,--parents", f.parents,
                      "make missing parents too; an existing directory is not an error");
  mkdir_cmd
      ->add_option("--mode", f.mode,
                   "permission bits, octal (default 0755; the guest's umask 022 applies)")
      ->type_name("MODE");
  ctx.OnRun(mkdir_cmd, [&ctx, &f] { return RunMakeDir(ctx, f); });

  CLI::App* rm_cmd = fs->add_subcommand(
      "rm", "remove a guest file, symlink or empty directory (-r: a whole tree)");
  rm_cmd->alias("delete");
  AddTarget(rm_cmd, f);
  rm_cmd->add_option("PATH", f.path, "guest path")->required();
  rm_cmd->add_flag("-r,--recursive", f.recursive,
                   "remove a directory and everything in it (symlinks are removed, not "
                   "followed)");
  ctx.OnRun(rm_cmd, [&ctx, &f] { return RunRemove(ctx, f); });

  CLI::App* mv_cmd = fs->add_subcommand("mv", "rename a guest path within the guest");
  AddTarget(mv_cmd, f);
  mv_cmd->add_option("PATH", f.path, "guest path")->required();
  mv_cmd->add_option("NEW_PATH", f.new_path, "new guest path")->required();
  mv_cmd->add_flag("-f,--overwrite", f.overwrite,
                   "replace an existing NEW_PATH (else it is an error, exit 4)");
  ctx.OnRun(mv_cmd, [&ctx, &f] { return RunMove(ctx, f); });

  CLI::App* watch_cmd = fs->add_subcommand(
      "watch",
      "print the changes under a guest directory as they happen, one line each (CREATE, "
      "MODIFY, DELETE, RENAME OLD -> NEW, CHMOD, OVERFLOW; directories end in /), until "
      "Ctrl-C (exit 130) or --timeout (exit 0); JSON lines with --json");
  AddTarget(watch_cmd, f);
  watch_cmd->add_option("PATH", f.path, "guest directory")->required();
  watch_cmd->add_flag("-r,--recursive", f.recursive,
                      "every directory below PATH too (up to 4096, new ones included)");
  // At most one year, as the global --timeout.
  f.timeout = watch_cmd
                  ->add_option("--timeout", f.timeout_seconds,
                               "stop after SECONDS and exit 0 (default: until Ctrl-C)")
                  ->type_name("SECONDS")
                  ->check(TimeoutSeconds(365 * 24 * 3600));
  ctx.OnRun(watch_cmd, [&ctx, &f] { return RunWatch(ctx, f); });
}

}  // namespace smolvm::cli
