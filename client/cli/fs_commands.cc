// smolvmctl fs stat|ls|mkdir|rm|mv|watch: the file system of a RUNNING VM
// (FilesystemService), as root or as a guest user (--user: its permissions
// apply and a relative PATH starts at its home). Errors keep the guest's
// meaning, so the exit codes are the usual ones: 3 for a missing path, 4
// for an existing target, 5 for a non-empty directory without -r.
//
// `fs watch` streams until Ctrl-C, SIGTERM or its --timeout: a
// StreamStopper (stream_stopper.h) cancels the watch, so the blocked
// DirWatch::next() returns and the output ends cleanly.

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli/stream_stopper.h"
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
  return ctx.out.StreamEvent(event);
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
  absl::StatusOr<std::unique_ptr<StreamStopper>> stopper =
      StreamStopper::Start([&w] { w.cancel(); }, timeout);
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
