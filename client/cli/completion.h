// File: client/cli/completion.h
// -----------------------------------------------------------------------------
//
// Shell completion scripts generated from the CLI11 app itself, so that they
// always list the subcommands, aliases and flags smolvmctl has:
// `smolvmctl completion bash` / `smolvmctl completion zsh` (zsh runs the
// bash function through bashcompinit).

#ifndef SMOLVM_CLIENT_CLI_COMPLETION_H_
#define SMOLVM_CLIENT_CLI_COMPLETION_H_

#include <string>

#include <CLI/CLI.hpp>

namespace smolvm::cli {

// BashCompletion returns a bash script defining _<name> and registering it
// with `complete -F` for `app`'s name: after each subcommand path it offers
// that command's subcommands (and aliases) and its long flags plus those of
// its parents (smolvmctl's global flags work at every level).
std::string BashCompletion(const CLI::App& app);

// ZshCompletion is BashCompletion behind `bashcompinit`.
std::string ZshCompletion(const CLI::App& app);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_COMPLETION_H_
