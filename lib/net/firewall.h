// File: firewall.h
//
// The packet filter and NAT of the VM network, as one nftables ruleset that
// is rendered from the complete desired state and swapped in atomically
// (one `nft -f` transaction), so there is never a half-applied rule set and
// applying the same state twice is a no-op.
//
// What the ruleset enforces (see RenderNftRuleset for the rules):
//  * anti-spoofing at layer 2 (table bridge): a TAP may only send IPv4 from
//    its VM's MAC and IP, and ARP about itself; frames from TAPs the state
//    does not list (named with `tap_prefix`) are dropped;
//  * VMs never reach each other (also not routed via the gateway) nor the
//    host itself (table inet, input), apart from replies;
//  * egress per VM: open, off, or restricted to CIDRs; NAT out of `uplink`;
//  * destinations no guest reaches whatever its egress mode (deny_cidrs:
//    cloud metadata, the host's LANs);
//  * port forwards host_ip:host_port -> guest_ip:guest_port, also for
//    connections made on the host to the addresses the port policy allows
//    (127.0.0.1 works: see route_localnet in link_backend.h), and nothing
//    else reaches a guest from outside.
//
// One VM's bad entry never blocks the others: rendering leaves that entry
// out (its TAP then sends nothing) and reports it; only a bad global
// setting fails the whole ruleset.
//
// Rendering is pure; NftFirewall only runs `nft -f` on the result.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/model/vm.h"
#include "lib/net/ip_pool.h"

namespace smolvm::net {

struct VmFirewallEntry {
  std::string vm_id;  // Only for rule comments; [A-Za-z0-9_.-]{1,64}.
  std::string tap;    // The VM's TAP device (a port of the bridge).
  uint32_t ip = 0;    // The guest's address, inside the subnet.
  std::string mac;    // The guest's MAC; "" = MacFor(ip).
  EgressPolicy egress;
  std::vector<PortForward> forwards;
};

struct FirewallState {
  std::string table = "smolvmd";  // Name of the inet and bridge tables.
  std::string bridge;
  Subnet subnet;
  std::string uplink;  // Masquerade guest traffic out of this device; "" = no NAT.
  // Bridge ports whose name starts with this and that `vms` does not list
  // send nothing (a TAP created before its rules, or a leftover); "" = off.
  std::string tap_prefix = kTapPrefix;
  // IPv4 CIDRs ("a.b.c.d/n" or a bare address) no guest may reach, in every
  // egress mode (restricted allow_cidrs included): dropped in each VM's
  // egress chain before anything is accepted. Replies to connections made
  // to a guest (port forwards) are not affected.
  std::vector<std::string> deny_cidrs;
  // Host addresses for which connections made on the host itself (nat
  // output chain) are forwarded too: a forward gets an output DNAT rule
  // only if its host_ip is listed (a 0.0.0.0 forward only if 0 is). Others
  // forward only what arrives from outside (prerouting). Empty = none.
  std::vector<uint32_t> output_dnat_ips;
  // The guests' resolver (0 = none): open-egress VMs may reach it on port
  // 53 even when it lies in a denied range (a resolver on the host's LAN).
  uint32_t dns = 0;
  std::vector<VmFirewallEntry> vms;
};

// A ruleset and the VM entries left out of it.
struct RenderedRuleset {
  std::string script;
  // vm_id -> why its entry was left out.
  std::map<std::string, absl::Status> rejected;
};

// The nft script that replaces tables `inet TABLE` and `bridge TABLE` with
// the rules of `state` in one transaction, whether they existed or not.
// Nothing invalid ever reaches nft:
//  * a bad global setting (table, bridge, uplink or tap prefix name, the
//    subnet, a deny_cidrs entry) fails the whole render, INVALID_ARGUMENT;
//  * a VM entry that cannot be rendered is left out, with the reason in
//    `rejected` (keyed by vm_id): INVALID_ARGUMENT naming the VM and the
//    field for a bad vm_id, TAP, MAC or CIDR, an address outside the
//    subnet's guest range, a bad protocol, port or host_ip, or an address or
//    TAP used by an earlier entry; ALREADY_EXISTS for a forward of a host
//    address/port/protocol an earlier entry (or the same one) forwards
//    already (0.0.0.0 overlaps every address). Entries are taken in order,
//    so the earlier of two clashing entries keeps its rules.
absl::StatusOr<RenderedRuleset> RenderNftRulesetLenient(const FirewallState& state);

// The same, strict: the first VM entry that cannot be rendered fails the
// whole render with its status.
absl::StatusOr<std::string> RenderNftRuleset(const FirewallState& state);

// The egress chain of a guest: "egress_" + 8 hex digits of its address.
std::string EgressChainName(uint32_t ip);

class Firewall {
 public:
  virtual ~Firewall() = default;

  // Makes the rules those of `state`, atomically: on error the previous
  // rules stay in force. VM entries that cannot be rendered are left out
  // (see RenderNftRulesetLenient: their TAPs send nothing) and returned,
  // vm_id -> reason; the rest is applied.
  virtual absl::StatusOr<std::map<std::string, absl::Status>> Apply(
      const FirewallState& state) = 0;

  // Deletes the tables of Apply(state with table = `table`); OK if absent.
  virtual absl::Status Remove(const std::string& table) = 0;
};

// Firewall on the nft command. Stateless: concurrent Apply calls are safe
// but the last one wins, so callers serialize changes to the state.
class NftFirewall : public Firewall {
 public:
  // `command_prefix` is prepended to every command (e.g. {"ip", "netns",
  // "exec", NAME} in tests; empty in production). Scripts are written to
  // `temp_dir` and removed after use.
  explicit NftFirewall(std::vector<std::string> command_prefix = {},
                       std::string temp_dir = "/tmp");

  absl::StatusOr<std::map<std::string, absl::Status>> Apply(
      const FirewallState& state) override;
  absl::Status Remove(const std::string& table) override;

 private:
  // Runs `nft -f` on `script`.
  absl::Status RunScript(const std::string& script, const std::string& what) const;

  std::vector<std::string> command_prefix_;
  std::string temp_dir_;
};

}  // namespace smolvm::net
