// smolvmctl operation get: a long call's progress by the operation_id it
// was made with (OperationService; smolvmctl's own calls show theirs live).

#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli_format.h"
#include "client/smolvm.h"

namespace smolvm::cli {

void RegisterOperationCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* operation = app.add_subcommand(
      "operation", "the progress of long calls made with an operation_id");
  operation->require_subcommand(1);
  auto& operation_id = ctx.Make<std::string>();
  CLI::App* get = operation->add_subcommand("get", "show an operation (running or recent)");
  get->add_option("ID", operation_id, "operation id")->required();
  ctx.OnRun(get, [&]() -> absl::Status {
    absl::StatusOr<v1::Operation> op = SmolVMManager(ctx.globals.options()).get_operation(operation_id);
    if (!op.ok()) return op.status();
    std::string text = absl::StrCat(
        "operation_id: ", EscapeForTerminal(op->operation_id()), "\nkind: ", op->kind(),
        "\ntarget: ", EscapeForTerminal(op->target()), "\nstage: ", EscapeForTerminal(op->stage()),
        "\ndone: ", op->done(), "\ntotal: ", op->total(), "\nunit: ", op->unit(),
        "\nfinished: ", op->finished() ? "true" : "false", "\n");
    if (op->finished()) {
      absl::StrAppend(&text, "code: ", op->code(), "\nerror_message: ",
                      EscapeForTerminal(op->error_message()), "\n");
    }
    return ctx.out.Message(*op, text);
  });
}

}  // namespace smolvm::cli
