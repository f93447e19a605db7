// File: client/cli/context.h
// -----------------------------------------------------------------------------
//
// What every smolvmctl command module shares: the global flags (where smolvmd
// is, the output format, the RPC deadline), the Printer that writes results,
// and the command chosen by the parser. Each module (vm_commands.cc,
// snapshot_commands.cc, ...) registers its subcommands on the CLI11 app with
// a Register*Commands function (commands.h); a subcommand's callback only
// records its action, which main runs after parsing has succeeded.

#ifndef SMOLVM_CLIENT_CLI_CONTEXT_H_
#define SMOLVM_CLIENT_CLI_CONTEXT_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "client/cli/printer.h"
#include "client/connection.h"
#include "client/status.h"

namespace smolvm::cli {

// Globals are the flags every command takes. Unset ones fall back to the
// environment inside the client library (ClientOptions).
struct Globals {
  std::string socket;
  std::string endpoint;
  std::string tls_cert, tls_key, tls_ca;
  std::string as_tenant;
  bool json = false;    // --json: the same as --output json.
  bool no_progress = false;  // --no-progress: long calls report nothing on stderr.
  std::string output;   // --output table|json|yaml ("" = table, or json with --json).
  double timeout_seconds = 600;
  bool timeout_given = false;  // --timeout was on the command line.

  ClientOptions options() const;
  OutputFormat format() const;
};

class CliContext {
 public:
  CliContext() : out(globals) {}
  CliContext(const CliContext&) = delete;
  CliContext& operator=(const CliContext&) = delete;

  Globals globals;
  const Printer out;  // Reads globals' format when it prints.

  // The chosen command's work; set by its callback during parsing.
  std::function<absl::Status()> action;
  // An exit code the action chose (exec's command status, a partial
  // failure); when unset, 0 on success.
  std::optional<int> exit_code;
  // The exit code of an error status: ExitCodeFor, or the chosen command's
  // own mapping (vm exec: ExecErrorExitCode).
  std::function<int(const absl::Status&)> error_exit_code = ExitCodeFor;

  // Make returns a new T that lives as long as the context: the variables a
  // module's options write into.
  template <typename T>
  T& Make() {
    auto made = std::make_shared<T>();
    kept_.push_back(made);
    return *made;
  }

  // OnRun makes `run` the action when `command` is the one given.
  void OnRun(CLI::App* command, std::function<absl::Status()> run) {
    command->callback([this, run = std::move(run)] { action = run; });
  }

 private:
  std::vector<std::shared_ptr<void>> kept_;
};

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_CONTEXT_H_
