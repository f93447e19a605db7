// smolvmctl vm exec ID [flags] [--] CMD [ARGS...]: runs CMD in the guest
// (argv form, no shell), copies its stdout and stderr to ours as they arrive
// and exits with its exit status; the codes of its own are in cli_rules.h.

#include <cmath>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/cli/args.h"
#include "client/cli/cli_rules.h"
#include "client/cli/commands.h"
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
};

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

absl::Status RunExec(CliContext& ctx, const ExecFlags& f) {
  RunOptions options;
  absl::StatusOr<std::map<std::string, std::string>> env = ParseEnv(f.env);
  if (!env.ok()) return env.status();
  options.env = *std::move(env);
  options.cwd = f.cwd;
  options.user = f.user;
  absl::StatusOr<absl::Duration> timeout = CommandTimeout(ctx, f);
  if (!timeout.ok()) return timeout.status();
  options.timeout = *timeout;
  if (f.stdin) {
    absl::StatusOr<std::string> data = ReadStdin();
    if (!data.ok()) return data.status();
    options.stdin_data = *std::move(data);
  }
  absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
  if (!target.ok()) return target.status();
  absl::StatusOr<ExecExit> exit =
      target->exec(f.argv, options, [](ExecStream stream, absl::string_view data) {
        FILE* out = stream == ExecStream::kStdout ? stdout : stderr;
        std::fwrite(data.data(), 1, data.size(), out);
        std::fflush(out);
      });
  if (!exit.ok()) return exit.status();
  if (exit->timed_out) {
    std::cerr << "smolvmctl: command timed out after "
              << absl::ToInt64Milliseconds(options.timeout) << " ms and was killed\n";
    ctx.exit_code = kExitTimedOut;
  } else if (exit->signal != 0) {
    ctx.exit_code = 128 + exit->signal;
  } else {
    ctx.exit_code = exit->exit_code;
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterExecCommand(CLI::App& vm, CliContext& ctx) {
  ExecFlags& f = ctx.Make<ExecFlags>();
  CLI::App* exec = vm.add_subcommand(
      "exec",
      "run a command in a RUNNING VM: vm exec ID [flags] [--] CMD [ARGS...] (everything after "
      "ID's first non-flag word is the command); streams its output and exits with its exit "
      "status (128+N if killed by signal N, 124 on timeout, 125 if smolvmctl or smolvmd "
      "failed, 126 if the command could not be started, 127 if not found)");
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
                 "send our stdin (read to its end, at most 16 MiB) to the command; without it the "
                 "command reads /dev/null");
  // From the moment `exec` is parsed, even a usage error exits 125.
  exec->preparse_callback([&ctx](size_t) { ctx.error_exit_code = ExecErrorExitCode; });
  ctx.OnRun(exec, [&ctx, &f] { return RunExec(ctx, f); });
}

}  // namespace smolvm::cli
