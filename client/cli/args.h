// File: client/cli/args.h
// -----------------------------------------------------------------------------
//
// Parsers of smolvmctl's argument values that the flags' own types cannot
// check (environment entries, port forwards, egress policies, file modes),
// and the few local reads the commands make (stdin, base names). Errors are
// INVALID_ARGUMENT naming the flag and what it wants.

#ifndef SMOLVM_CLIENT_CLI_ARGS_H_
#define SMOLVM_CLIENT_CLI_ARGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "smolvm/v1/types.pb.h"

namespace smolvm::cli {

// ParseEnv turns repeated K=V flags into a map (the value may contain '=' and
// be empty; a later K wins). Names are checked by the daemon.
absl::StatusOr<std::map<std::string, std::string>> ParseEnv(const std::vector<std::string>& flags);
// ParseKeyValues is ParseEnv for any repeated KEY=VALUE flag (`flag` names
// it in errors), e.g. --label team=ml.
absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(
    const std::vector<std::string>& flags, absl::string_view flag);
// ParseStatuses turns --status values (created, running, paused, stopped,
// error; any case) into VM statuses.
absl::StatusOr<std::vector<v1::VmStatus>> ParseStatuses(const std::vector<std::string>& flags);

// ParsePort parses a decimal port number, 1-65535.
absl::StatusOr<uint32_t> ParsePort(absl::string_view text);

// HostSide is the host end of a port forward: [HOST_IP:]HOST_PORT[/udp]
// ("" = 127.0.0.1 for the daemon; protocol "tcp" unless "/udp").
struct HostSide {
  std::string host_ip;
  uint32_t host_port = 0;
  uint32_t guest_port = 0;  // Only for forwards.
  std::string protocol = "tcp";
};

// ParsePortSpec parses "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]" when
// `with_guest_port`, else "[HOST_IP:]HOST_PORT[/udp]". `what` names the flag
// or command in the error ("--forward", "expose", ...). HOST_IP must look like
// an IPv4 address (the daemon has the last word on which ones it takes).
absl::StatusOr<HostSide> ParsePortSpec(absl::string_view what, absl::string_view spec,
                                       bool with_guest_port);

// ParseForward parses a --forward / expose spec into a PortForward.
absl::StatusOr<v1::PortForward> ParseForward(absl::string_view what, absl::string_view spec);

// ParseMount parses a --mount spec HOST_DIR:GUEST_DIR[:OPTS], OPTS a comma
// list of ro, rw (the default) and detach (detach_on_snapshot). Host paths
// holding ':' cannot be given this way (use the API).
absl::StatusOr<v1::Mount> ParseMount(absl::string_view spec);

// The egress flags of vm create and vm egress: --egress MODE (or the MODE
// argument), --allow CIDR, --deny CIDR, --allow-domain NAME, --deny-domain
// NAME (each repeatable).
struct EgressOptions {
  std::string mode;
  std::vector<std::string> allow, deny, allow_domains, deny_domains;
};

// ParseEgress builds the policy of EgressOptions; nullopt when none is
// given (the daemon's default, open). An allow list alone implies
// restricted, a deny list alone open. CIDRs and names are checked by the
// daemon.
absl::StatusOr<std::optional<v1::EgressPolicy>> ParseEgress(const EgressOptions& f);

// --max-lifetime DURATION, --max-lifetime-action ACTION, --idle-timeout
// DURATION, --idle-action ACTION, --no-auto-resume (vm create, vm lifetime).
struct LifetimeOptions {
  std::string max_lifetime, max_lifetime_action, idle_timeout, idle_action;
  bool no_auto_resume = false;
};

// ParseLifetime builds the policy of LifetimeOptions; nullopt when no limit
// is given. Durations: "300", "300s", "5m", "1h30m" (whole seconds); actions:
// delete, stop, pause, snapshot.
absl::StatusOr<std::optional<v1::Lifetime>> ParseLifetime(const LifetimeOptions& f);

// ParseMode parses an octal permission mode such as "0755" or "644".
absl::StatusOr<uint32_t> ParseMode(const std::string& text);

// ReadStdin reads all of our stdin, refusing more than 16 MiB (the most an
// ExecRequest.stdin may carry).
absl::StatusOr<std::string> ReadStdin();

// BaseName is the last component of `path` ("" for "/" or "").
std::string BaseName(const std::string& path);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_ARGS_H_
