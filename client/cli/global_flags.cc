// The flags every smolvmctl command takes, and small helpers the command
// modules share.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/cli_format.h"

namespace smolvm::cli {

const char kExitCodeHelp[] =
    "Exit codes: 0 ok; 1 other error (e.g. permission denied); 2 invalid argument or usage; "
    "3 not found; 4 already exists; 5 failed precondition (wrong VM state); "
    "6 resource exhausted; 7 smolvmd unavailable. "
    "vm exec (and vm shell) exits with the command's status (128+N if killed by signal N), "
    "124 if --timeout expired, 125 if smolvmctl or smolvmd failed (any error "
    "above), 126 if the command could not be started, 127 if it was not found.";

ClientOptions Globals::options() const {
  ClientOptions options;
  options.socket_path = socket;
  options.timeout = absl::Seconds(timeout_seconds);
  options.endpoint = endpoint;
  options.tls_cert = tls_cert;
  options.tls_key = tls_key;
  options.tls_ca = tls_ca;
  options.act_as_tenant = as_tenant;
  return options;
}

OutputFormat Globals::format() const {
  if (output == "yaml") return OutputFormat::kYaml;
  if (output == "json" || (output.empty() && json)) return OutputFormat::kJson;
  return OutputFormat::kTable;
}

CLI::Option* AddQuietFlag(CLI::App* list, bool& quiet) {
  return list->add_flag("-q,--quiet", quiet, "print only the ids, one per line");
}

CLI::Option* AddLabelOption(CLI::App* command, std::vector<std::string>& labels,
                            const std::string& help) {
  return command->add_option("--label", labels, help)
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
}

void NoteForkFailures(CliContext& ctx, const std::string& what,
                      const std::vector<v1::ForkResult>& results) {
  const size_t failed = std::count_if(results.begin(), results.end(),
                                      [](const v1::ForkResult& r) { return r.error_code() != 0; });
  if (failed > 0) {
    std::cerr << "smolvmctl: " << EscapeForTerminal(what) << ": " << failed << " of "
              << results.size() << " clones failed\n";
    ctx.exit_code = 1;
  }
}

CLI::Validator TimeoutSeconds(double max_seconds) {
  return CLI::Validator(
      [max_seconds](std::string& text) -> std::string {
        double seconds = 0;
        if (!CLI::detail::lexical_cast(text, seconds) || !std::isfinite(seconds) ||
            seconds <= 0 || seconds > max_seconds) {
          return absl::StrCat("want seconds, more than 0 and at most ",
                              static_cast<int64_t>(max_seconds),
                              " (e.g. 30 or 0.5), not ", text);
        }
        return "";
      },
      "");
}

void RegisterGlobalFlags(CLI::App& app, CliContext& ctx) {
  Globals& g = ctx.globals;
  app.add_option("--endpoint", g.endpoint,
                 "where smolvmd listens: unix:///PATH or HOST:PORT (mutual "
                 "TLS; needs --tls-cert, --tls-key and --tls-ca). Default: "
                 "--socket, else $SMOLVMD_ENDPOINT, else $SMOLVMD_SOCKET, "
                 "else unix:///run/smolvmd/smolvmd.sock")
      ->type_name("ENDPOINT");
  app.add_option("--socket", g.socket,
                 "smolvmd Unix socket, when --endpoint is not given "
                 "(default: $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock)")
      ->type_name("PATH");
  app.add_option("--tls-cert", g.tls_cert,
                 "client certificate for a HOST:PORT endpoint (default: $SMOLVMD_TLS_CERT)")
      ->type_name("PEM");
  app.add_option("--tls-key", g.tls_key, "private key of --tls-cert (default: $SMOLVMD_TLS_KEY)")
      ->type_name("PEM");
  app.add_option("--tls-ca", g.tls_ca,
                 "CA certificate(s) that signed smolvmd's certificate (default: $SMOLVMD_TLS_CA)")
      ->type_name("PEM");
  app.add_option("--as-tenant", g.as_tenant,
                 "act for this tenant (admins only): its objects, its quota")
      ->type_name("TENANT");
  app.add_flag("--no-progress", g.no_progress,
               "do not report the progress of long calls on stderr");
  app.add_flag("--json", g.json, "print protobuf JSON (proto field names); = --output json");
  app.add_option("--output,-o", g.output,
                 "table (default), json (protobuf JSON, proto field names) or yaml (the same "
                 "values)")
      ->type_name("FORMAT")
      ->check(CLI::IsMember({"table", "json", "yaml"}));
  // One year: far beyond any call, and absl::Seconds stays finite.
  app.add_option("--timeout", g.timeout_seconds,
                 "deadline of each RPC; for vm exec, the command's time limit")
      ->type_name("SECONDS")
      ->check(TimeoutSeconds(365 * 24 * 3600))
      ->capture_default_str()
      ->each([&g](const std::string&) { g.timeout_given = true; });
}

}  // namespace smolvm::cli
