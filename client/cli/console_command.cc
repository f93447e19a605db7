// smolvmctl vm logs [-f] [--tail BYTES] ID: the guest console
// (StreamConsole), as `docker logs` / `tail -f` show a container's.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/stream_stopper.h"
#include "client/smolvm.h"

namespace smolvm::cli {
namespace {

struct LogsFlags {
  std::string vm_id;
  bool follow = false;
  uint64_t tail_bytes = 0;
  CLI::Option* tail = nullptr;
};

absl::Status RunLogs(CliContext& ctx, const LogsFlags& f) {
  absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
  if (!target.ok()) return target.status();
  std::optional<uint64_t> tail;
  if (f.tail->count() > 0) tail = f.tail_bytes;
  absl::StatusOr<std::unique_ptr<ConsoleStream>> stream = target->console(f.follow, tail);
  if (!stream.ok()) return stream.status();
  // Fine for logs: Ctrl-C, or the daemon ending the stream (the tail was
  // sent, the VM stopped).
  return PrintUntilEnd(**stream, [&ctx](std::string data) -> absl::Status {
    if (ctx.out.structured()) {
      v1::ConsoleChunk chunk;
      chunk.set_data(std::move(data));
      return ctx.out.StreamEvent(chunk);
    }
    // The console as the guest wrote it (it is data, like vm exec's output).
    std::fwrite(data.data(), 1, data.size(), stdout);
    std::fflush(stdout);
    return absl::OkStatus();
  });
}

}  // namespace

void RegisterLogsCommand(CLI::App& vm, CliContext& ctx) {
  LogsFlags& f = ctx.Make<LogsFlags>();
  CLI::App* logs = vm.add_subcommand(
      "logs",
      "print a RUNNING or PAUSED VM's console as the daemon keeps it (the last "
      "console_log_max_bytes); with -f go on printing what the guest writes until the VM stops "
      "or Ctrl-C; ConsoleChunk JSON lines with --json");
  logs->add_option("ID", f.vm_id, "VM id")->required();
  logs->add_flag("--follow,-f", f.follow, "keep printing new output");
  f.tail = logs->add_option("--tail", f.tail_bytes,
                            "print only the last BYTES first (default: all that is kept; 0 "
                            "with -f: only new output)")
               ->type_name("BYTES");
  ctx.OnRun(logs, [&ctx, &f] { return RunLogs(ctx, f); });
}

}  // namespace smolvm::cli
