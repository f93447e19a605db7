// smolvmctl process start|list|kill|attach|wait (alias ps): background
// processes in a RUNNING VM (ProcessService). They belong to the guest: they
// run on after smolvmctl exits, and their last 256 KiB of output stay in the
// guest for any later `process attach`.
//
// `process attach` and `process wait` exit as `vm exec` does with the
// process's status (128+N if signal N ended it); their errors (an unknown
// pid, `wait --timeout`) keep the usual exit codes of client/status.h.
// `attach` streams until the process exits, or until Ctrl-C or SIGTERM: a
// StreamStopper (stream_stopper.h) cancels the connection, which detaches
// without touching the process, and the exit code is then 130 or 143.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli/stream_stopper.h"
#include "client/cli_format.h"
#include "client/smolvm.h"
#include "smolvm/v1/process_service.pb.h"

namespace smolvm::cli {
namespace {

// The longest wait WaitProcessRequest.timeout_ms can carry, 2^32-1 ms.
constexpr double kMaxWaitSeconds = 4294967;

// The flags of every process command (only one runs).
struct ProcessFlags {
  std::string vm_id, cwd, user;
  std::vector<std::string> env, argv;
  std::uint32_t pid = 0;
  std::string signal = "TERM";
  bool group = false;
  bool quiet = false;
  std::uint32_t tail_bytes = 0;
  double timeout_seconds = 0;
  CLI::Option* timeout = nullptr;  // process wait --timeout.
};

// ParseSignal reads a --signal value: a number, 1-64, or a name in any case
// with or without "SIG" ("TERM", "sigkill", "Usr1").
absl::StatusOr<int> ParseSignal(absl::string_view text) {
  int number = 0;
  if (absl::SimpleAtoi(text, &number)) {
    if (number >= 1 && number <= 64) return number;
  } else {
    const std::string upper = absl::AsciiStrToUpper(text);
    const absl::string_view name = absl::StripPrefix(upper, "SIG");
    // The named ones are 1-31 (SignalName gives the others as numbers).
    for (int sig = 1; sig <= 31 && !name.empty(); ++sig) {
      if (SignalName(sig) == name) return sig;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--signal ", text,
                   ": want a signal number, 1-64, or a name such as TERM, KILL, INT, HUP or "
                   "USR1"));
}

// SignalLabel names a signal in messages: "SIGTERM", or "signal 40".
std::string SignalLabel(int sig) {
  const std::string name = SignalName(sig);
  if (absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) {
    return absl::StrCat("signal ", name);
  }
  return absl::StrCat("SIG", name);
}

// ExitCodeOf is the exit code of an exited process as a shell reports it:
// its status, or 128+N when signal N ended it.
int ExitCodeOf(const v1::ProcessInfo& process) {
  return process.signal() != 0 ? 128 + process.signal() : process.exit_code();
}

absl::StatusOr<SmolVM> Target(const CliContext& ctx, const ProcessFlags& f) {
  return SmolVM::attach(f.vm_id, ctx.globals.options());
}

absl::Status RunStart(const CliContext& ctx, const ProcessFlags& f) {
  RunOptions options;
  absl::StatusOr<std::map<std::string, std::string>> env = ParseEnv(f.env);
  if (!env.ok()) return env.status();
  options.env = *std::move(env);
  options.cwd = f.cwd;
  options.user = f.user;
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::ProcessInfo> started = target->start_process(f.argv, options);
  if (!started.ok()) return started.status();
  // Just the pid, so that `PID=$(smolvmctl process start ...)` works.
  return ctx.out.Message(*started, absl::StrCat(started->pid(), "\n"));
}

absl::Status RunList(const CliContext& ctx, const ProcessFlags& f) {
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<std::vector<v1::ProcessInfo>> listed = target->list_processes();
  if (!listed.ok()) return listed.status();
  if (f.quiet) {
    std::vector<std::string> pids;
    for (const v1::ProcessInfo& p : *listed) pids.push_back(absl::StrCat(p.pid()));
    return Printer::Ids(pids);
  }
  v1::ListProcessesResponse response;
  for (const v1::ProcessInfo& p : *listed) *response.add_processes() = p;
  return ctx.out.Message(response, ProcessTable(*listed));
}

absl::Status RunKill(const CliContext& ctx, const ProcessFlags& f) {
  absl::StatusOr<int> sig = ParseSignal(f.signal);
  if (!sig.ok()) return sig.status();
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::ProcessInfo> signalled = target->signal_process(f.pid, *sig, f.group);
  if (!signalled.ok()) return signalled.status();
  return ctx.out.Message(*signalled, absl::StrCat("sent ", SignalLabel(*sig), " to process ",
                                                  f.group ? "group " : "", f.pid, "\n"));
}

// WriteOutput copies a chunk of the process's output to our stdout or
// stderr as it is (it is data, like vm exec's) and flushes it.
void WriteOutput(FILE* to, const std::string& data) {
  std::fwrite(data.data(), 1, data.size(), to);
  std::fflush(to);
}

// PrintResponse writes one response of an attach: its output as it is, or
// with --output json|yaml the whole message as a JSON line or YAML document
// (output bytes in base64, as protobuf JSON has them). A gap in the output
// gets a note on stderr first, in every format.
absl::Status PrintResponse(const CliContext& ctx, const v1::ConnectProcessResponse& response) {
  if (response.skipped_bytes() > 0) {
    std::fflush(stdout);  // The note goes between the chunks it separates.
    std::cerr << "[smolvmctl: " << response.skipped_bytes() << " bytes of output skipped]\n"
              << std::flush;
  }
  const OutputFormat format = ctx.out.format();
  if (format == OutputFormat::kTable) {
    if (response.event_case() == v1::ConnectProcessResponse::kStdout) {
      WriteOutput(stdout, response.stdout());
    } else if (response.event_case() == v1::ConnectProcessResponse::kStderr) {
      WriteOutput(stderr, response.stderr());
    }
    return absl::OkStatus();
  }
  return ctx.out.StreamEvent(response);
}

absl::Status RunAttach(CliContext& ctx, const ProcessFlags& f) {
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<std::unique_ptr<ProcessConnection>> connection =
      target->connect_process(f.pid, f.tail_bytes);
  if (!connection.ok()) return connection.status();
  ProcessConnection& c = **connection;
  absl::StatusOr<std::unique_ptr<StreamStopper>> stopper =
      StreamStopper::Start([&c] { c.cancel(); }, absl::ZeroDuration());
  if (!stopper.ok()) return stopper.status();

  std::optional<v1::ProcessInfo> exited;
  absl::Status ended;
  while (true) {
    absl::StatusOr<v1::ConnectProcessResponse> response = c.next();
    if (!response.ok()) {
      ended = response.status();
      break;
    }
    if (absl::Status s = PrintResponse(ctx, *response); !s.ok()) {
      ended = s;
      c.cancel();
      break;
    }
    if (response->has_exit()) {  // The last one.
      exited = response->exit();
      break;
    }
  }
  const int sig = (*stopper)->stop_signal();
  stopper->reset();  // Joins its thread, which may still call cancel().

  if (exited.has_value()) {
    ctx.exit_code = ExitCodeOf(*exited);
    return absl::OkStatus();
  }
  // Detached by Ctrl-C or SIGTERM: the process goes on; 128+N as a shell
  // expects of an interrupted command.
  if (ended.code() == absl::StatusCode::kCancelled && sig != 0) {
    ctx.exit_code = 128 + sig;
    return absl::OkStatus();
  }
  if (ended.ok()) {  // Not expected: the stream ends with `exit` or an error.
    return absl::UnavailableError(
        absl::StrCat("process attach ", f.pid, ": the output ended before the exit"));
  }
  return ended;
}

absl::Status RunWait(CliContext& ctx, const ProcessFlags& f) {
  // wait's own --timeout, else a global one given before `process` (as for
  // vm exec), else as long as it takes.
  absl::Duration timeout = absl::InfiniteDuration();
  if (f.timeout->count() > 0) {
    timeout = absl::Seconds(f.timeout_seconds);
  } else if (ctx.globals.timeout_given) {
    timeout = std::min(absl::Seconds(ctx.globals.timeout_seconds), absl::Seconds(kMaxWaitSeconds));
  }
  absl::StatusOr<SmolVM> target = Target(ctx, f);
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::ProcessInfo> waited = target->wait_process(f.pid, timeout);
  if (!waited.ok()) return waited.status();
  if (absl::Status s = ctx.out.Message(*waited, absl::StrCat(ProcessStatus(*waited), "\n"));
      !s.ok()) {
    return s;
  }
  ctx.exit_code = ExitCodeOf(*waited);
  return absl::OkStatus();
}

// AddVm adds the VM id every process command takes first.
void AddVm(CLI::App* cmd, ProcessFlags& f) {
  cmd->add_option("ID", f.vm_id, "VM id")->required();
}

// AddPid adds the PID (ProcessInfo.pid) that follows it.
void AddPid(CLI::App* cmd, ProcessFlags& f) {
  cmd->add_option("PID", f.pid, "the process's pid in the guest (process list)")->required();
}

}  // namespace

void RegisterProcessCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* process = app.add_subcommand(
      "process", "run commands in the background in a RUNNING VM, and list, signal, attach to "
                 "and wait for them (they run on without smolvmctl)");
  process->alias("ps");
  process->require_subcommand(1);
  ProcessFlags& f = ctx.Make<ProcessFlags>();

  CLI::App* start_cmd = process->add_subcommand(
      "start",
      "start a command in the background: process start ID [flags] [--] CMD [ARGS...] "
      "(everything after ID's first non-flag word is the command; argv form, no shell); prints "
      "its pid");
  AddVm(start_cmd, f);
  start_cmd->add_option("CMD", f.argv, "command and arguments (argv form, no shell)")
      ->required();
  start_cmd->add_option("--env", f.env, "extra environment variable (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
  start_cmd->add_option("--cwd", f.cwd, "working directory (default /root, or --user's home)")
      ->type_name("DIR");
  start_cmd->add_option("--user,-u", f.user, "guest user to run as, name or uid (default root)");
  ctx.OnRun(start_cmd, [&ctx, &f] { return RunStart(ctx, f); });

  CLI::App* list_cmd = process->add_subcommand(
      "list", "list the VM's processes, running and exited, by pid: PID STATUS STARTED OUTPUT "
              "USER COMMAND");
  list_cmd->alias("ls");
  AddVm(list_cmd, f);
  AddQuietFlag(list_cmd, f.quiet)->description("print only the pids, one per line");
  ctx.OnRun(list_cmd, [&ctx, &f] { return RunList(ctx, f); });

  CLI::App* kill_cmd =
      process->add_subcommand("kill", "send a signal to a running process (default SIGTERM)");
  AddVm(kill_cmd, f);
  AddPid(kill_cmd, f);
  kill_cmd
      ->add_option("--signal,-s", f.signal,
                   "signal number (1-64) or name, any case, with or without SIG: TERM (default), "
                   "KILL, INT, HUP, USR1, ...")
      ->type_name("SIG");
  kill_cmd->add_flag("--group", f.group,
                     "signal its whole process group (the process and its children)");
  ctx.OnRun(kill_cmd, [&ctx, &f] { return RunKill(ctx, f); });

  CLI::App* attach_cmd = process->add_subcommand(
      "attach",
      "copy a process's stdout and stderr to ours as it writes them and exit with its status "
      "once it exits (128+N if killed by signal N); Ctrl-C detaches (exit 130) and the process "
      "runs on; JSON lines with --json");
  AddVm(attach_cmd, f);
  AddPid(attach_cmd, f);
  attach_cmd
      ->add_option("--tail", f.tail_bytes,
                   "first replay up to BYTES of its earlier output (the guest keeps the last "
                   "256 KiB; default 0: only new output)")
      ->type_name("BYTES");
  ctx.OnRun(attach_cmd, [&ctx, &f] { return RunAttach(ctx, f); });

  CLI::App* wait_cmd = process->add_subcommand(
      "wait",
      "wait until a process exits, print how (exited N, signal NAME) and exit with its status "
      "(128+N if killed by signal N)");
  AddVm(wait_cmd, f);
  AddPid(wait_cmd, f);
  f.timeout = wait_cmd
                  ->add_option("--timeout", f.timeout_seconds,
                               "give up after SECONDS (exit 1, DEADLINE_EXCEEDED; the process "
                               "runs on; default: no limit)")
                  ->type_name("SECONDS")
                  ->check(TimeoutSeconds(kMaxWaitSeconds));
  ctx.OnRun(wait_cmd, [&ctx, &f] { return RunWait(ctx, f); });
}

}  // namespace smolvm::cli
