// File: client/cli/commands.h
// -----------------------------------------------------------------------------
//
// smolvmctl's command modules: each Register*Commands adds one resource's
// subcommands (and their aliases) to `app`, binding their flags to storage
// owned by `ctx` and recording the chosen one in ctx.action (context.h).

#ifndef SMOLVM_CLIENT_CLI_COMMANDS_H_
#define SMOLVM_CLIENT_CLI_COMMANDS_H_

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli/context.h"

namespace smolvm::cli {

void RegisterGlobalFlags(CLI::App& app, CliContext& ctx);
void RegisterVmCommands(CLI::App& app, CliContext& ctx);     // vm ... (exec: exec_command.cc)
void RegisterExecCommand(CLI::App& vm, CliContext& ctx);     // vm exec
void RegisterShellCommand(CLI::App& vm, CliContext& ctx);    // vm shell (exec_command.cc)
void RegisterLogsCommand(CLI::App& vm, CliContext& ctx);     // vm logs (console_command.cc)
void RegisterStatsCommands(CLI::App& vm, CliContext& ctx);   // vm stats|top (stats_command.cc)
void RegisterFileCommands(CLI::App& app, CliContext& ctx);   // file put|get
void RegisterFsCommands(CLI::App& app, CliContext& ctx);     // fs stat|ls|mkdir|rm|mv|watch
void RegisterProcessCommands(CLI::App& app, CliContext& ctx);  // process (ps) start|ls|kill|...
void RegisterSnapshotCommands(CLI::App& app, CliContext& ctx);
void RegisterPoolCommands(CLI::App& app, CliContext& ctx);
void RegisterOperationCommands(CLI::App& app, CliContext& ctx);  // operation get
void RegisterImageCommands(CLI::App& app, CliContext& ctx);
void RegisterEventsCommand(CLI::App& app, CliContext& ctx);      // events (event_command.cc)
void RegisterDoctorCommand(CLI::App& app, CliContext& ctx);      // doctor
void RegisterCompletionCommand(CLI::App& app, CliContext& ctx);  // completion bash|zsh

// AddQuietFlag adds -q/--quiet to a list command: print only the ids.
CLI::Option* AddQuietFlag(CLI::App* list, bool& quiet);

// AddLabelOption adds a repeatable --label KEY=VALUE (ParseKeyValues).
CLI::Option* AddLabelOption(CLI::App* command, std::vector<std::string>& labels,
                            const std::string& help);

// NoteForkFailures sets exit code 1, with a count on stderr, if any clone
// of a fork (`what`: "fork snapshot S") failed.
void NoteForkFailures(CliContext& ctx, const std::string& what,
                      const std::vector<v1::ForkResult>& results);

// IdsOf returns the `id` field of each of `items` (for -q).
template <typename T>
std::vector<std::string> IdsOf(const std::vector<T>& items, const std::string& (T::*id)() const) {
  std::vector<std::string> ids;
  for (const T& item : items) ids.push_back((item.*id)());
  return ids;
}

// TimeoutSeconds checks a --timeout value: seconds, more than 0, at most
// `max_seconds`, with a short message otherwise.
CLI::Validator TimeoutSeconds(double max_seconds);

// The exit-code table of `smolvmctl --help` and docs/cli.md.
extern const char kExitCodeHelp[];

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_COMMANDS_H_
