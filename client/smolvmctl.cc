// smolvmctl: command-line client of smolvmd.
//
//   smolvmctl [--endpoint unix:///PATH|HOST:PORT] [--socket PATH]
//       [--tls-cert PEM --tls-key PEM --tls-ca PEM] [--as-tenant TENANT]
//       [--json | --output table|json|yaml] [--timeout SECONDS]
//       vm|snapshot|file|fs|process|image|pool|doctor|completion ...
//
// Each command is one RPC (lists follow every page) made through the client
// library (client/connection.h, client/smolvm.h), which also resolves where
// smolvmd is: --endpoint, else --socket, else $SMOLVMD_ENDPOINT, else
// $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock. The commands live in one
// module per resource under client/cli/ (commands.h); this file wires them
// up, parses, and turns the outcome into an exit code. docs/cli.md is the
// user's guide (exit codes, aliases, completion, --output, doctor).
//
// Errors print "smolvmctl: <message>" on stderr and exit with ExitCodeFor
// (client/status.h), or for `vm exec` and `vm shell` 125/126/127
// (client/cli/cli_rules.h). `vm exec`, `vm shell`, `process attach` and
// `process wait` exit with the guest command's status when it ran.
// Text that comes from the daemon or a guest is escaped so that it cannot
// carry terminal control sequences (cli::EscapeForTerminal); exec output and
// downloaded files are data and pass through unchanged.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/cli_rules.h"
#include "client/cli/commands.h"
#include "client/cli/context.h"
#include "client/cli_format.h"
#include "client/status.h"

namespace smolvm::cli {
namespace {

// Deepest returns the most nested subcommand the parser entered.
const CLI::App* Deepest(const CLI::App* app) {
  for (const CLI::App* sub : app->get_subcommands()) return Deepest(sub);
  return app;
}

// Hint explains a parse error about an unknown word better than CLI11's "A
// subcommand is required": which word, where, and the nearest valid one.
// "" when there is no unknown word to talk about.
std::string Hint(const CLI::App& app) {
  const std::vector<std::string> extras = app.remaining(true);
  if (extras.empty()) return "";
  const CLI::App* at = Deepest(&app);
  const std::string& word = extras.front();
  std::vector<std::string> candidates;
  if (word.size() > 1 && word[0] == '-') {
    for (const CLI::App* a = at; a != nullptr; a = a->get_parent()) {
      for (const CLI::Option* opt : a->get_options()) {
        for (const std::string& name : opt->get_lnames()) candidates.push_back("--" + name);
      }
    }
  } else {
    for (const CLI::App* sub : at->get_subcommands([](const CLI::App*) { return true; })) {
      candidates.push_back(sub->get_name());
      for (const std::string& alias : sub->get_aliases()) candidates.push_back(alias);
    }
    if (at == &app) candidates.insert(candidates.end(), {"--version", "--help"});
  }
  const std::string where = at == &app ? "" : at->get_name() + ": ";
  std::string hint = absl::StrCat(where, "unknown ", word[0] == '-' ? "flag" : "command", " \"",
                                  EscapeForTerminal(word), "\"");
  if (std::string best = Suggest(word, candidates); !best.empty()) {
    absl::StrAppend(&hint, "; did you mean \"", best, "\"?");
  } else if (word[0] != '-' && !candidates.empty()) {
    absl::StrAppend(&hint, " (one of: ", absl::StrJoin(candidates, ", "), ")");
  }
  return hint;
}

int Main(int argc, char** argv) {
  CLI::App app("Manage QEMU microVMs through the smolvmd daemon.", "smolvmctl");
  app.footer(absl::StrCat(kExitCodeHelp,
                          "\nAliases: ls = list, rm = delete. Shell completion: smolvmctl "
                          "completion bash|zsh. Guide: docs/cli.md."));
  app.set_version_flag("--version", "smolvmctl " SMOLVM_VERSION, "print smolvmctl's version");
  // Global flags are accepted after the subcommands too.
  app.fallthrough();
  app.require_subcommand(1);

  CliContext ctx;
  RegisterGlobalFlags(app, ctx);
  RegisterVmCommands(app, ctx);
  RegisterFileCommands(app, ctx);
  RegisterFsCommands(app, ctx);
  RegisterProcessCommands(app, ctx);
  RegisterSnapshotCommands(app, ctx);
  RegisterPoolCommands(app, ctx);
  RegisterOperationCommands(app, ctx);
  RegisterImageCommands(app, ctx);
  RegisterEventsCommand(app, ctx);
  RegisterDoctorCommand(app, ctx);
  RegisterCompletionCommand(app, ctx);

  // `vm exec ID uname -a`, `process start ID sleep 60`: everything from the
  // command on is the command's. `levels` are the command and its parents,
  // where its flags are looked up.
  const auto separate = [&app](std::vector<std::string> words,
                               const std::vector<std::string>& path,
                               std::vector<const CLI::App*> levels) {
    levels.push_back(&app);
    return InsertCommandSeparator(std::move(words), path, 1, [&](const std::string& flag) {
      for (const CLI::App* level : levels) {
        if (const CLI::Option* opt = level->get_option_no_throw(flag); opt != nullptr) {
          // A flag's type size is 1 in CLI11 2.1; it expects no items.
          return opt->get_items_expected_min() != 0;
        }
      }
      return false;
    });
  };
  const CLI::App* vm = app.get_subcommand("vm");
  const CLI::App* exec = vm->get_subcommand("exec");
  const CLI::App* process = app.get_subcommand("process");
  const CLI::App* start = process->get_subcommand("start");
  std::vector<std::string> args =
      separate(std::vector<std::string>(argv + 1, argv + argc), {"vm", "exec"}, {exec, vm});
  for (const char* name : {"process", "ps"}) {
    args = separate(std::move(args), {name, "start"}, {start, process});
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first.

  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    // --help, --version and friends exit 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    const std::string hint = Hint(app);
    if (hint.empty()) {
      app.exit(e);
    } else {
      std::cerr << "smolvmctl: " << hint << "\nRun with --help for more information.\n";
    }
    return ctx.error_exit_code(absl::InvalidArgumentError(e.what()));
  }

  absl::Status status = ctx.action ? ctx.action() : absl::InternalError("no command");
  if (!status.ok()) {
    // The message may carry a guest's console tail or other text of the
    // daemon's: show it, but not as terminal control sequences.
    std::cerr << "smolvmctl: " << EscapeForTerminal(status.message()) << "\n";
    return ctx.error_exit_code(status);
  }
  return ctx.exit_code.value_or(0);
}

}  // namespace
}  // namespace smolvm::cli

int main(int argc, char** argv) { return smolvm::cli::Main(argc, argv); }
