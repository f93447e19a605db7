// smolvmctl doctor and smolvmctl completion bash|zsh: commands about this
// host and this shell rather than smolvmd's objects.

#include <cstdlib>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "client/cli/commands.h"
#include "client/cli/completion.h"
#include "client/cli/doctor.h"
#include "client/cli/yaml.h"
#include "client/smolvm.h"

namespace smolvm::cli {
namespace {

// UnixSocketOf is the socket path of a "unix:" endpoint, "" for TCP.
std::string UnixSocketOf(const std::string& endpoint) {
  absl::string_view rest = endpoint;
  if (!absl::ConsumePrefix(&rest, "unix:")) return "";
  if (absl::StartsWith(rest, "//")) rest.remove_prefix(2);
  return std::string(rest);
}

}  // namespace

void RegisterDoctorCommand(CLI::App& app, CliContext& ctx) {
  DoctorPaths& paths = ctx.Make<DoctorPaths>();
  if (const char* dir = std::getenv("SMOLVMD_STATE_DIR"); dir != nullptr && *dir != '\0') {
    paths.state_dir = dir;
  }
  CLI::App* doctor = app.add_subcommand(
      "doctor",
      "check this host for what smolvmd needs (/dev/kvm, the daemon's socket, nftables, the "
      "bridge module, free space, cgroups); prints OK/WARN/FAIL lines with fixes and exits 1 "
      "if any check failed");
  doctor->add_option("--state-dir", paths.state_dir, "smolvmd's state dir, for the free space")
      ->type_name("DIR")
      ->capture_default_str();
  ctx.OnRun(doctor, [&ctx, &paths]() -> absl::Status {
    ClientOptions options = ctx.globals.options();
    paths.socket = UnixSocketOf(ResolveEndpoint(options));
    if (!ctx.globals.timeout_given) options.timeout = absl::Seconds(5);
    const std::vector<CheckResult> checks = RunDoctorChecks(
        paths, [&options] { return SmolVMManager(options).list_vms().status(); });
    switch (ctx.out.format()) {
      case OutputFormat::kTable:
        std::cout << RenderChecks(checks);
        break;
      case OutputFormat::kJson:
        std::cout << ChecksToJson(checks).dump(2) << "\n";
        break;
      case OutputFormat::kYaml:
        std::cout << ToYaml(ChecksToJson(checks));
        break;
    }
    for (const CheckResult& check : checks) {
      if (check.level == CheckLevel::kFail) ctx.exit_code = 1;
    }
    return absl::OkStatus();
  });
}

void RegisterCompletionCommand(CLI::App& app, CliContext& ctx) {
  std::string& shell = ctx.Make<std::string>();
  CLI::App* completion = app.add_subcommand(
      "completion",
      "print a shell completion script: `source <(smolvmctl completion bash)`, or see "
      "docs/cli.md to install it");
  completion->add_option("SHELL", shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember({"bash", "zsh"}));
  ctx.OnRun(completion, [&app, &shell]() -> absl::Status {
    std::cout << (shell == "zsh" ? ZshCompletion(app) : BashCompletion(app));
    return absl::OkStatus();
  });
}

}  // namespace smolvm::cli
