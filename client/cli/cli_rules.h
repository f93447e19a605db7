// File: client/cli/cli_rules.h
// -----------------------------------------------------------------------------
//
// The pure decisions of smolvmctl's command line, apart from any I/O so that
// they have unit tests of their own: the exit codes of `vm exec`, "did you
// mean" suggestions for mistyped words, and the rewrite that lets `vm exec ID
// CMD ARGS...` work without `--`.

#ifndef SMOLVM_CLIENT_CLI_CLI_RULES_H_
#define SMOLVM_CLIENT_CLI_CLI_RULES_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace smolvm::cli {

// Exit codes of `vm exec` of its own (the others are the command's): the
// convention of `docker run`, `env`, `timeout` and POSIX shells.
inline constexpr int kExitTimedOut = 124;       // --timeout expired; killed.
inline constexpr int kExitExecFailed = 125;     // smolvmctl's or smolvmd's error.
inline constexpr int kExitCannotExecute = 126;  // Found but could not be started.
inline constexpr int kExitNotFound = 127;       // No such command in the guest.

// ExecErrorExitCode is the exit code of a `vm exec` that failed with `status`
// (never OK) before the command ran: 127 when the guest agent reported that
// it could not find the command ("exec in guest: exec CMD: No such file or
// directory" / "Not a directory"), 126 for any other failure to start it
// (permission denied, not executable, missing --cwd), and 125 for every other
// error, including usage errors and an unknown VM. The agent reports start
// failures only as text (ExecExit.start_error), so this matches that text.
int ExecErrorExitCode(const absl::Status& status);

// Suggest returns the candidate closest to `word` (edit distance, counting a
// transposition as one edit) when it is close enough to be what was meant:
// at most 2 edits and fewer than `word` has characters, or `word` is a prefix
// (2+ characters) of exactly one candidate. "" when none is.
std::string Suggest(absl::string_view word,
                    const std::vector<std::string>& candidates);

// EditDistance is the optimal-string-alignment distance of `a` and `b`.
size_t EditDistance(absl::string_view a, absl::string_view b);

// InsertCommandSeparator lets a command that ends in "CMD [ARGS...]" be
// written without "--": it walks `args` (argv without argv[0]) like the
// parser would, following `path` (subcommand names, e.g. {"vm", "exec"}),
// then `positionals` positional arguments (the VM id), and inserts "--"
// before the next positional word, so that everything from there on is the
// command even when it looks like an option ("uname -a"). Options met on the
// way are skipped, with their value when `takes_value(option)` says they take
// one ("--env", "-e"; a "--name=value" carries its own). Returns `args`
// unchanged when it already has a "--" before that point, names another
// subcommand, or has no command.
std::vector<std::string> InsertCommandSeparator(
    std::vector<std::string> args, const std::vector<std::string>& path,
    int positionals, const std::function<bool(const std::string&)>& takes_value);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_CLI_RULES_H_
