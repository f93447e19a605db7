// File: host_firewall.h
//
// Living beside the host's other firewalls. smolvmd's own nftables table
// (firewall.h) enforces isolation and egress, but a packet must pass every
// base chain on its hook: when Docker, ufw, firewalld or a hardened
// configuration drops forwarded traffic in its own chains, guests lose
// their egress and port forwards silently. HostFirewall adds narrow
// ACCEPT rules for the VM bridge where those firewalls expect them, so
// their DROP cannot override our decision (our table still filters what
// the bridge sends and receives), and removes exactly those rules again.
//
//  * Docker: chain DOCKER-USER exists in iptables table filter ->
//    `-I DOCKER-USER -i BR -j ACCEPT` and `-o BR`, commented "smolvmd".
//  * else, FORWARD drops (policy DROP, as ufw sets it, or an unconditional
//    `-j DROP`/`-j REJECT` rule) -> the same two rules at the top of FORWARD.
//  * firewalld running: BR joins zone trusted at runtime, unless it is in
//    a zone already (then the operator's choice stands).
// Nothing else is touched; without iptables (and firewalld) there is
// nothing to do.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/base/subprocess.h"

namespace smolvm::net {

class HostFirewall {
 public:
  virtual ~HostFirewall() = default;

  // Makes the host's firewalls let the traffic of `bridge` through, as
  // above. Idempotent. Returns what it found and did, for the log ("" if
  // no other firewall is in the way), e.g. "iptables: added accept rules
  // for bridge smolvm0 to chain DOCKER-USER (docker)".
  virtual absl::StatusOr<std::string> Ensure(const std::string& bridge) = 0;

  // Deletes the rules Ensure adds for `bridge` (wherever they are, also
  // duplicates) and takes it out of firewalld's zone trusted if it is there
  // at runtime only. OK if there is nothing to remove.
  virtual absl::Status Remove(const std::string& bridge) = 0;
};

// HostFirewall on the iptables and firewall-cmd commands. Stateless;
// callers serialize Ensure/Remove (two concurrent Ensure calls could both
// insert a rule; Remove deletes duplicates).
class IptablesHostFirewall : public HostFirewall {
 public:
  // `command_prefix` is prepended to every command (e.g. {"ip", "netns",
  // "exec", NAME} in tests; empty in production).
  explicit IptablesHostFirewall(std::vector<std::string> command_prefix = {});

  absl::StatusOr<std::string> Ensure(const std::string& bridge) override;
  absl::Status Remove(const std::string& bridge) override;

 private:
  // Runs command_prefix_ + argv; a non-zero exit is in the result. NOT_FOUND
  // if the program is not installed.
  absl::StatusOr<SubprocessResult> Run(std::vector<std::string> argv) const;
  // `iptables -S` of table filter; NOT_FOUND if iptables is not installed.
  absl::StatusOr<std::string> ListFilterRules() const;
  // Whether `chain` holds `rule` (iptables -C).
  absl::StatusOr<bool> HasRule(const std::string& chain,
                               const std::vector<std::string>& rule) const;
  absl::StatusOr<std::string> EnsureIptables(const std::string& bridge) const;
  absl::Status RemoveIptables(const std::string& bridge) const;
  // "" if firewalld is not running.
  absl::StatusOr<std::string> EnsureFirewalld(const std::string& bridge) const;
  absl::Status RemoveFirewalld(const std::string& bridge) const;
  absl::StatusOr<bool> FirewalldRunning() const;

  std::vector<std::string> command_prefix_;
};

}  // namespace smolvm::net
