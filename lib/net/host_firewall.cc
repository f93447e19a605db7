#include "lib/net/host_firewall.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/status_macros.h"
#include "lib/net/ip_pool.h"  // ValidateInterfaceName

namespace smolvm::net {
namespace {

constexpr char kDockerUser[] = "DOCKER-USER";
constexpr char kForward[] = "FORWARD";
constexpr char kComment[] = "smolvmd";

// The two rules Ensure adds to a chain, without the chain.
std::vector<std::vector<std::string>> AcceptRules(const std::string& bridge) {
  std::vector<std::vector<std::string>> rules;
  for (const char* direction : {"-i", "-o"}) {
    rules.push_back(
        {direction, bridge, "-m", "comment", "--comment", kComment, "-j", "ACCEPT"});
  }
  return rules;
}

// Whether `program` could not be run at all: RunSubprocess's NOT_FOUND, or
// a command prefix (ip netns exec, env) reporting the failed exec.
bool NotInstalled(const absl::StatusOr<SubprocessResult>& result) {
  if (!result.ok()) return absl::IsNotFound(result.status());
  return result->exit_code == 127 ||
         (result->exit_code != 0 && absl::StrContains(result->stderr_text, "exec of") &&
          absl::StrContains(result->stderr_text, "No such file or directory"));
}

absl::Status CommandError(const std::vector<std::string>& argv, const SubprocessResult& r) {
  return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), " exited with ",
                                          r.exit_code, ": ", TailOf(r.stderr_text, 2000)));
}

// What `iptables -S` of table filter says about FORWARD.
struct ForwardChain {
  bool docker_user = false;  // Chain DOCKER-USER exists.
  std::string policy;        // "ACCEPT", "DROP".
  bool drops = false;        // The policy, or an unconditional rule, drops.
};

ForwardChain ParseFilterRules(const std::string& rules) {
  ForwardChain chain;
  for (absl::string_view line : absl::StrSplit(rules, '\n', absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    if (line == absl::StrCat("-N ", kDockerUser)) chain.docker_user = true;
    if (absl::ConsumePrefix(&line, "-P FORWARD ")) chain.policy = std::string(line);
    // RHEL-style hardening: ACCEPT policy, a final catch-all REJECT.
    if (line == "-A FORWARD -j DROP" || absl::StartsWith(line, "-A FORWARD -j REJECT")) {
      chain.drops = true;
    }
  }
  chain.drops = chain.drops || chain.policy == "DROP" || chain.policy == "REJECT";
  return chain;
}

}  // namespace

IptablesHostFirewall::IptablesHostFirewall(std::vector<std::string> command_prefix)
    : command_prefix_(std::move(command_prefix)) {}

absl::StatusOr<SubprocessResult> IptablesHostFirewall::Run(
    std::vector<std::string> argv) const {
  argv.insert(argv.begin(), command_prefix_.begin(), command_prefix_.end());
  SubprocessOptions options;
  options.timeout = absl::Seconds(30);
  auto result = RunSubprocess(argv, options);
  if (NotInstalled(result)) {
    return absl::NotFoundError(absl::StrCat(argv[command_prefix_.size()], " is not installed"));
  }
  return result;
}

absl::StatusOr<std::string> IptablesHostFirewall::ListFilterRules() const {
  // -w: wait for the xtables lock rather than fail when Docker or ufw
  // holds it for a moment.
  std::vector<std::string> argv = {"iptables", "-w", "10", "-t", "filter", "-S"};
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult result, Run(argv));
  if (result.exit_code != 0) return CommandError(argv, result);
  return result.stdout_text;
}

absl::StatusOr<bool> IptablesHostFirewall::HasRule(const std::string& chain,
                                                   const std::vector<std::string>& rule) const {
  std::vector<std::string> argv = {"iptables", "-w", "10", "-t", "filter", "-C", chain};
  argv.insert(argv.end(), rule.begin(), rule.end());
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult result, Run(argv));
  // 1: no such rule (or no such chain); anything else is a real failure.
  if (result.exit_code == 0 || result.exit_code == 1) return result.exit_code == 0;
  return CommandError(argv, result);
}

absl::StatusOr<std::string> IptablesHostFirewall::EnsureIptables(
    const std::string& bridge) const {
  auto rules = ListFilterRules();
  if (absl::IsNotFound(rules.status())) return std::string("iptables not installed: nothing to do");
  if (!rules.ok()) return rules.status();
  ForwardChain forward = ParseFilterRules(*rules);
  std::string chain, why;
  if (forward.docker_user) {
    chain = kDockerUser;
    why = "docker";
  } else if (forward.drops) {
    chain = kForward;
    why = forward.policy == "DROP" ? "its policy is DROP" : "it ends in a catch-all drop";
  } else {
    return std::string();  // Nothing drops our traffic.
  }
  bool added = false;
  // Inserted in reverse at position 1, so they end up in order on top.
  std::vector<std::vector<std::string>> accept = AcceptRules(bridge);
  for (auto it = accept.rbegin(); it != accept.rend(); ++it) {
    SMOLVM_ASSIGN_OR_RETURN(bool present, HasRule(chain, *it));
    if (present) continue;
    std::vector<std::string> argv = {"iptables", "-w", "10", "-t", "filter", "-I", chain, "1"};
    argv.insert(argv.end(), it->begin(), it->end());
    SMOLVM_ASSIGN_OR_RETURN(SubprocessResult result, Run(argv));
    if (result.exit_code != 0) return CommandError(argv, result);
    added = true;
  }
  return absl::StrCat("iptables: ", added ? "added" : "kept", " accept rules for bridge ",
                      bridge, " in chain ", chain, " (", why, ")");
}

absl::Status IptablesHostFirewall::RemoveIptables(const std::string& bridge) const {
  auto rules = ListFilterRules();
  if (absl::IsNotFound(rules.status())) return absl::OkStatus();
  if (!rules.ok()) return rules.status();
  for (const char* chain : {kDockerUser, kForward}) {
    for (const std::vector<std::string>& rule : AcceptRules(bridge)) {
      // Also duplicates (two racing Ensure calls); bounded, in case a
      // delete "succeeds" without effect.
      for (int i = 0; i < 16; ++i) {
        SMOLVM_ASSIGN_OR_RETURN(bool present, HasRule(chain, rule));
        if (!present) break;
        std::vector<std::string> argv = {"iptables", "-w", "10", "-t", "filter", "-D", chain};
        argv.insert(argv.end(), rule.begin(), rule.end());
        SMOLVM_ASSIGN_OR_RETURN(SubprocessResult result, Run(argv));
        if (result.exit_code != 0) return CommandError(argv, result);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> IptablesHostFirewall::FirewalldRunning() const {
  auto state = Run({"firewall-cmd", "--state"});
  if (absl::IsNotFound(state.status())) return false;
  if (!state.ok()) return state.status();
  // 0 "running"; 252 "not running".
  return state->exit_code == 0 && absl::StartsWith(state->stdout_text, "running");
}

absl::StatusOr<std::string> IptablesHostFirewall::EnsureFirewalld(
    const std::string& bridge) const {
  SMOLVM_ASSIGN_OR_RETURN(bool running, FirewalldRunning());
  if (!running) return std::string();
  // An interface in a zone already stays there: that is the operator's
  // (or NetworkManager's) decision, and adding it elsewhere would fail.
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult zone,
                          Run({"firewall-cmd", absl::StrCat("--get-zone-of-interface=", bridge)}));
  std::string current(absl::StripAsciiWhitespace(zone.stdout_text));
  if (zone.exit_code == 0 && !current.empty()) {
    return absl::StrCat("firewalld: bridge ", bridge, " is in zone ", current,
                        current == "trusted" ? "" : " (left as configured)");
  }
  std::vector<std::string> argv = {"firewall-cmd", "--zone=trusted",
                                   absl::StrCat("--add-interface=", bridge)};
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult added, Run(argv));
  if (added.exit_code != 0) return CommandError(argv, added);
  return absl::StrCat("firewalld: added bridge ", bridge, " to zone trusted (runtime only)");
}

absl::Status IptablesHostFirewall::RemoveFirewalld(const std::string& bridge) const {
  SMOLVM_ASSIGN_OR_RETURN(bool running, FirewalldRunning());
  if (!running) return absl::OkStatus();
  const std::string query = absl::StrCat("--query-interface=", bridge);
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult runtime,
                          Run({"firewall-cmd", "--zone=trusted", query}));
  if (runtime.exit_code != 0) return absl::OkStatus();  // Not there (1) or no such zone.
  // In the permanent configuration: the operator put it there, not us.
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult permanent,
                          Run({"firewall-cmd", "--permanent", "--zone=trusted", query}));
  if (permanent.exit_code == 0) return absl::OkStatus();
  std::vector<std::string> argv = {"firewall-cmd", "--zone=trusted",
                                   absl::StrCat("--remove-interface=", bridge)};
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult removed, Run(argv));
  if (removed.exit_code != 0) return CommandError(argv, removed);
  return absl::OkStatus();
}

absl::StatusOr<std::string> IptablesHostFirewall::Ensure(const std::string& bridge) {
  const std::string op = absl::StrCat("open host firewall for bridge ", bridge);
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(bridge, "bridge name"));
  std::vector<std::string> done;
  for (auto step : {&IptablesHostFirewall::EnsureIptables,
                    &IptablesHostFirewall::EnsureFirewalld}) {
    auto what = (this->*step)(bridge);
    if (!what.ok()) {
      return absl::Status(what.status().code(), absl::StrCat(op, ": ", what.status().message()));
    }
    if (!what->empty()) done.push_back(*std::move(what));
  }
  return absl::StrJoin(done, "; ");
}

absl::Status IptablesHostFirewall::Remove(const std::string& bridge) {
  const std::string op = absl::StrCat("close host firewall for bridge ", bridge);
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(bridge, "bridge name"));
  // Both, even if the first fails: leave as little behind as possible.
  absl::Status iptables = RemoveIptables(bridge);
  absl::Status firewalld = RemoveFirewalld(bridge);
  absl::Status first = iptables.ok() ? firewalld : iptables;
  if (first.ok()) return first;
  return absl::Status(first.code(), absl::StrCat(op, ": ", first.message()));
}

}  // namespace smolvm::net
