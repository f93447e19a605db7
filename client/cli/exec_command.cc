// smolvmctl vm exec ID [flags] [--] CMD [ARGS...]: runs CMD in the guest
// (argv form, no shell), copies its stdout and stderr to ours as they arrive
// and exits with its exit status; the codes of its own are in cli_rules.h.
// With -i (stream our stdin) or -t (a guest terminal) it runs through the
// interactive ExecStream instead (interactive_exec.h), and so does
// `smolvmctl vm shell ID`, a login shell on a guest terminal.

#include <cmath>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/cli/args.h"
#include "client/cli/cli_rules.h"
#include "client/cli/commands.h"
#include "client/cli/interactive_exec.h"
#include "client/smolvm.h"

namespace smolvm::cli {
namespace {

struct ExecFlags {
  std::string vm_id, cwd, user;
  std::vector<std::string> env, argv;
  std::uint32_t timeout_ms = 0;
  double timeout_seconds = 0;
  CLI::Option* timeout = nullptr;
  bool stdin = false;
  bool interactive = false;  // -i
  bool tty = false;          // -t
};

// ShellFlags are `vm shell`'s.
struct ShellFlags {
  std::string vm_id, cwd, user;
  std::vector<std::string> env;
};

// The program of `vm shell`. The agent runs an argv without a shell and the
// images differ (busybox's /etc/passwd gives root /bin/sh; an OCI image may
// have no entry for the uid, or /sbin/nologin), so a POSIX sh picks the
// shell: $SHELL if the VM's env or --env sets it (the agent does not), else
// the user's shell in the guest's /etc/passwd, else sh from PATH (the
// image's, or the agent's own busybox in a shell-less image); it replaces
// itself with that shell as a login shell (-l: it reads /etc/profile).
constexpr char kLoginShellScript[] =
    "s=${SHELL:-}\n"
    "if [ -z \"$s\" ] && [ -r /etc/passwd ] && u=$(id -u 2>/dev/null); then\n"
    "  while IFS=: read -r _ _ uid _ _ _ sh; do\n"
    "    if [ \"$uid\" = \"$u\" ]; then s=$sh; break; fi\n"
    "  done </etc/passwd\n"
    "fi\n"
    "case $s in ''|*/nologin|*/false) s=sh ;; esac\n"
    "[ \"$s\" = sh ] || [ -x \"$s\" ] || s=sh\n"
    "exec \"$s\" -l\n";

// CommandTimeout is the command's time limit: --timeout-ms, else --timeout
// given after `exec`, else a --timeout given before it (which is also the
// RPC deadline of other commands); zero for none.
absl::StatusOr<absl::Duration> CommandTimeout(const CliContext& ctx, const ExecFlags& f) {
  if (f.timeout_ms != 0 && f.timeout->count() > 0) {
    return absl::InvalidArgumentError("vm exec: give --timeout or --timeout-ms, not both");
  }
  if (f.timeout_ms != 0) return absl::Milliseconds(f.timeout_ms);
  if (f.timeout->count() > 0) return absl::Seconds(f.timeout_seconds);
  if (ctx.globals.timeout_given) return absl::Seconds(ctx.globals.timeout_seconds);
  return absl::ZeroDuration();
}

// BaseRunOptions are the options `vm exec` and `vm shell` share.
absl::StatusOr<RunOptions> BaseRunOptions(const std::vector<std::string>& env_flags,
                                          const std::string& cwd, const std::string& user) {
  RunOptions options;
  absl::StatusOr<std::map<std::string, std::string>> env = ParseEnv(env_flags);
  if (!env.ok()) return env.status();
  options.env = *std::move(env);
  options.cwd = cwd;
  options.user = user;
  return options;
}

// RefuseStructuredOutput: an interactive command's output is the guest's
// raw bytes (a terminal's escape sequences, prompts), which no JSON or YAML
// document can carry as the other commands' results do. `what` names the
// command.
absl::Status RefuseStructuredOutput(const CliContext& ctx, absl::string_view what) {
  if (ctx.globals.format() == OutputFormat::kTable) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, ": --json / --output json|yaml do not apply: its output is the command's own bytes"));
}

// SetExitCode makes smolvmctl exit as the command did: its status, 128+N
// for signal N, 124 (with a note) if its `timeout` expired.
void SetExitCode(CliContext& ctx, const ExecExit& exit, absl::Duration timeout) {
  if (exit.timed_out) {
    std::cerr << "smolvmctl: command timed out after " << absl::ToInt64Milliseconds(timeout)
              << " ms and was killed\n";
    ctx.exit_code = kExitTimedOut;
  } else if (exit.signal != 0) {
    ctx.exit_code = 128 + exit.signal;
  } else {
    ctx.exit_code = exit.exit_code;
  }
}

absl::Status RunExec(CliContext& ctx, const ExecFlags& f) {
  const bool interactive = f.interactive || f.tty;
  if (interactive && f.stdin) {
    return absl::InvalidArgumentError(
        "vm exec: --stdin does not go with -i or -t, give one or the other (-i streams our "
        "stdin as it is read; --stdin reads all of it first and sends it at once)");
  }
  if (interactive) {
    if (absl::Status s = RefuseStructuredOutput(ctx, "vm exec -i/-t"); !s.ok()) return s;
  }
  absl::StatusOr<RunOptions> options = BaseRunOptions(f.env, f.cwd, f.user);
  if (!options.ok()) return options.status();
  absl::StatusOr<absl::Duration> timeout = CommandTimeout(ctx, f);
  if (!timeout.ok()) return timeout.status();
  options->timeout = *timeout;
  absl::StatusOr<ExecExit> exit;
  if (interactive) {
    InteractiveMode mode;
    mode.tty = f.tty;
    mode.stream_stdin = f.interactive;
    exit = RunInteractive(f.vm_id, ctx.globals.options(), f.argv, *options, mode);
  } else {
    if (f.stdin) {
      absl::StatusOr<std::string> data = ReadStdin();
      if (!data.ok()) return data.status();
      options->stdin_data = *std::move(data);
    }
    absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
    if (!target.ok()) return target.status();
    exit = target->exec(f.argv, *options, [](ExecStream stream, absl::string_view data) {
      FILE* out = stream == ExecStream::kStdout ? stdout : stderr;
      std::fwrite(data.data(), 1, data.size(), out);
      std::fflush(out);
    });
  }
  if (!exit.ok()) return exit.status();
  SetExitCode(ctx, *exit, options->timeout);
  return absl::OkStatus();
}

// RunShell: no time limit (not even a global --timeout, which is the
// deadline of the RPCs that open the session): a shell lasts as long as
// its user wants.
absl::Status RunShell(CliContext& ctx, const ShellFlags& f) {
  if (absl::Status s = RefuseStructuredOutput(ctx, "vm shell"); !s.ok()) return s;
  absl::StatusOr<RunOptions> options = BaseRunOptions(f.env, f.cwd, f.user);
  if (!options.ok()) return options.status();
  InteractiveMode mode;
  mode.tty = true;
  mode.stream_stdin = true;
  absl::StatusOr<ExecExit> exit = RunInteractive(
      f.vm_id, ctx.globals.options(), {"sh", "-c", kLoginShellScript}, *options, mode);
  if (!exit.ok()) return exit.status();
  SetExitCode(ctx, *exit, options->timeout);
  return absl::OkStatus();
}

}  // namespace

void RegisterExecCommand(CLI::App& vm, CliContext& ctx) {
  ExecFlags& f = ctx.Make<ExecFlags>();
  CLI::App* exec = vm.add_subcommand(
      "exec",
      "run a command in a RUNNING VM: vm exec ID [flags] [--] CMD [ARGS...] (everything after "
      "ID's first non-flag word is the command; -it for an interactive one); streams its "
      "output and exits with its exit status (128+N if killed by signal N, 124 on timeout, 125 "
      "if smolvmctl or smolvmd failed, 126 if the command could not be started, 127 if not "
      "found)");
  exec->add_option("ID", f.vm_id, "VM id")->required();
  exec->add_option("CMD", f.argv, "command and arguments (argv form, no shell)")->required();
  exec->add_option("--env", f.env, "extra environment variable (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
  exec->add_option("--cwd", f.cwd, "working directory (default /root, or --user's home)")
      ->type_name("DIR");
  exec->add_option("--user,-u", f.user, "guest user to run as, name or uid (default root)");
  // The agent takes a 32-bit number of milliseconds.
  f.timeout = exec->add_option("--timeout", f.timeout_seconds,
                               "kill the command after SECONDS (default: no limit)")
                  ->type_name("SECONDS")
                  ->check(TimeoutSeconds(4294967));
  exec->add_option("--timeout-ms", f.timeout_ms, "kill the command after N ms (default: no limit)")
      ->type_name("N");
  exec->add_flag("--stdin", f.stdin,
                 "send our stdin (read to its end, at most 16 MiB) to the command; without it "
                 "(and -i) the command reads /dev/null");
  exec->add_flag("-i,--interactive", f.interactive,
                 "stream our stdin to the command as it is read, and end it at our EOF (not "
                 "with --stdin, which reads it all first)");
  exec->add_flag("-t,--tty", f.tty,
                 "run the command on a terminal in the guest, sized like ours, TERM=$TERM; with "
                 "-i and our stdin a terminal, ours is raw until the command exits (keys, ^C "
                 "included, go to the command)");
  // From the moment `exec` is parsed, even a usage error exits 125.
  exec->preparse_callback([&ctx](size_t) { ctx.error_exit_code = ExecErrorExitCode; });
  ctx.OnRun(exec, [&ctx, &f] { return RunExec(ctx, f); });
}

void RegisterShellCommand(CLI::App& vm, CliContext& ctx) {
  ShellFlags& f = ctx.Make<ShellFlags>();
  CLI::App* shell = vm.add_subcommand(
      "shell",
      "an interactive login shell in a RUNNING VM, on a guest terminal (vm exec -it with the "
      "user's shell: $SHELL, else its /etc/passwd entry, else /bin/sh); exits with the "
      "shell's status, as vm exec does");
  shell->add_option("ID", f.vm_id, "VM id")->required();
  shell->add_option("--env", f.env, "extra environment variable (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
  shell->add_option("--cwd", f.cwd, "working directory (default /root, or --user's home)")
      ->type_name("DIR");
  shell->add_option("--user,-u", f.user, "guest user to run as, name or uid (default root)");
  // Its errors exit as vm exec's do (125, or 126/127 if the shell cannot
  // start).
  shell->preparse_callback([&ctx](size_t) { ctx.error_exit_code = ExecErrorExitCode; });
  ctx.OnRun(shell, [&ctx, &f] { return RunShell(ctx, f); });
}

}  // namespace smolvm::cli
