// File: firewall.h
//
// The packet filter and NAT of the VM network, as nftables tables that are
// rendered from the desired state. The whole state is swapped in atomically
// (one transaction) at startup and reconciliation, so there is never a
// half-applied rule set and applying the same state twice is a no-op; after
// that one VM's change is one small transaction that touches only that VM's
// set elements, so it costs the same with 1 VM or 1,000.
//
// Layout: the chains and their rules are the same whatever the VMs; each
// VM is only elements of named sets and maps (keyed by what identifies its
// packets, with a comment naming the VM):
//  * table bridge: l2_ip (TAP . MAC . address) and l2_arp (TAP . MAC .
//    ARP sender MAC . ARP sender address) say what a TAP may send, taps
//    lists every VM's TAP (anything else from it is dropped);
//  * table inet: egress_open (guests with open egress); allow_0 ..
//    allow_32 (restricted egress: guest . network address of each allowed
//    /n, looked up as `ip saddr . ip daddr & <mask of /n>`; off, or an
//    empty allow list, is no element at all); vm_deny_0 .. vm_deny_32 (a
//    VM's own deny_cidrs, the same way, checked before any accept of its
//    egress); ingress (guest . protocol .
//    guest port of each forward); and the DNAT maps from a forward's host
//    address, protocol and port to guest . port: dnat_addr / dnat_any
//    (0.0.0.0) for connections from outside, out_addr / out_any for those
//    made on the host; dns_filtered (guests with domain rules, whose DNS
//    goes to the daemon's resolver), and dns_allow / dns_active, the
//    addresses of allowed names learned from its answers (dynamic: see
//    LearnedAddress).
// All are hash sets and maps. Adding, changing or removing a VM deletes
// the elements that differ and adds the new ones, nothing else:
// libnftables reads every chain of a table before each transaction, but
// not the elements of named sets, so a change costs the same with 1 VM or
// 1,000 (an interval set would not: see firewall.cc). The chains, the
// global set deny and everything global are rendered only by the
// whole-state apply.
//
// What the ruleset enforces (see RenderNftRuleset for the rules):
//  * anti-spoofing at layer 2 (table bridge): a TAP may only send IPv4 from
//    its VM's MAC and IP, and ARP about itself; frames from TAPs the state
//    does not list (named with `tap_prefix`) are dropped;
//  * VMs never reach each other (also not routed via the gateway) nor the
//    host itself (table inet, input), apart from replies;
//  * egress per VM: open, off, or restricted to CIDRs, minus the VM's own
//    deny CIDRs; NAT out of `uplink`;
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
// Rendering is pure (NftRuleset); NftFirewall runs the result through
// libnftables, without spawning nft.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/model/vm.h"
#include "lib/net/ip_pool.h"

namespace smolvm::net {

struct VmFirewallEntry {
  std::string vm_id;  // Only for element comments; [A-Za-z0-9_.-]{1,64}.
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
  // egress mode (restricted allow_cidrs included): dropped before any
  // egress is accepted. Replies to connections made to a guest (port
  // forwards) are not affected.
  std::vector<std::string> deny_cidrs;
  // Host addresses for which connections made on the host itself (nat
  // output chain) are forwarded too: a forward gets an output DNAT element
  // only if its host_ip is listed (a 0.0.0.0 forward only if 0 is). Others
  // forward only what arrives from outside (prerouting). Empty = none.
  std::vector<uint32_t> output_dnat_ips;
  // The guests' resolver (0 = none): open-egress VMs may reach it on port
  // 53 even when it lies in a denied range (a resolver on the host's LAN).
  uint32_t dns = 0;
  // The daemon's resolver (dns_proxy.h) for VMs with domain rules: their
  // DNS to any address (port 53) is sent to dns_proxy_ip:dns_proxy_port
  // (a local address, the bridge's) and reaches it there; DNS over TLS and
  // QUIC (853) is dropped. 0 = no resolver (such VM entries are rejected,
  // FAILED_PRECONDITION).
  uint32_t dns_proxy_ip = 0;
  uint16_t dns_proxy_port = 0;
  std::vector<VmFirewallEntry> vms;
};

// Addresses a restricted guest learned from the resolver's answers for its
// allow_domains: set dns_allow (guest . address, with a timeout) holds them
// for the answer's TTL, clamped to [kLearnedMinSeconds, kLearnedMaxSeconds]
// (a TTL of 0 must still let the guest connect; a day-long one must not
// outlive a policy change by a day); set dns_active keeps an address of a
// connection opened in time while packets flow, until kLearnedIdleSeconds
// of silence (that set is filled from the packet path). Elements are only
// ever added by the resolver (and dns_active by packets of what it added)
// and removed with ForgetLearned; a whole-state Apply empties both, and the
// resolver puts back what is still valid (DnsProxy::Reinstall).
inline constexpr uint32_t kLearnedMinSeconds = 60;
inline constexpr uint32_t kLearnedMaxSeconds = 3600;
inline constexpr uint32_t kLearnedIdleSeconds = 300;
struct LearnedAddress {
  uint32_t ip = 0;
  uint32_t ttl = 0;  // Seconds, as the answer said.
};

// The nft script that adds (or refreshes) `addresses` for guest `guest` in
// set dns_allow of table inet `table`, the comment naming `vm_id`; "" if
// there is nothing to add. Re-adding an element restarts its timeout on
// every kernel (delete and add in one transaction: Linux before 6.9 keeps
// the old timeout on a plain add).
std::string RenderLearnedScript(const std::string& table, uint32_t guest,
                                const std::string& vm_id,
                                const std::vector<LearnedAddress>& addresses);
// The nft script that removes `addresses` of guest `guest` from dns_allow
// and dns_active, whether each is still there or not; "" if none.
std::string RenderForgetScript(const std::string& table, uint32_t guest,
                               const std::vector<uint32_t>& addresses);

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

// OK if `table` can name smolvmd's nft tables: 1-32 characters of
// [A-Za-z0-9_], starting with a letter; else INVALID_ARGUMENT.
absl::Status ValidateNftTableName(const std::string& table);

// What the tables hold, as a value: the globals and the entries of the VMs
// whose rules are installed, indexed for the clash checks. Pure: it renders
// scripts and is updated with what a successful transaction installed.
// Not thread-safe.
class NftRuleset {
 public:
  // The ruleset of the whole state (RenderNftRulesetLenient's rules).
  static absl::StatusOr<NftRuleset> Render(const FirewallState& state);
  NftRuleset(NftRuleset&&) noexcept;
  NftRuleset& operator=(NftRuleset&&) noexcept;
  ~NftRuleset();

  // The script that replaces both tables with this ruleset.
  const std::string& script() const { return script_; }
  // vm_id -> why its entry was left out (Render only).
  const std::map<std::string, absl::Status>& rejected() const { return rejected_; }

  // Whether a VM's change can be applied on top of this ruleset: `state`'s
  // globals are the ones rendered, and no entry was left out (a rejected
  // entry may become valid when another VM goes; only a whole render
  // finds that out).
  bool AcceptsVmChanges(const FirewallState& state) const;

  // One VM's change: the script that turns this ruleset's rules of `vm_id`
  // into those of `desired` (nullptr: none) in one transaction, and the
  // ruleset after it. A `desired` entry that cannot be rendered (the same
  // checks as Render, against the other installed VMs) removes the VM's
  // rules and is reported in `rejected`. Requires AcceptsVmChanges(state).
  struct VmChange {
    std::string script;  // "" when nothing changes.
    absl::Status rejected;
  };
  VmChange RenderVmChange(const std::string& vm_id, const VmFirewallEntry* desired);
  // Makes the last RenderVmChange's result this ruleset's state (after
  // its script was applied).
  void CommitVmChange();

  struct Impl;

 private:
  explicit NftRuleset(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string script_;
  std::map<std::string, absl::Status> rejected_;
};

class Firewall {
 public:
  virtual ~Firewall() = default;

  // Makes the rules those of `state`, atomically: on error the previous
  // rules stay in force. VM entries that cannot be rendered are left out
  // (see RenderNftRulesetLenient: their TAPs send nothing) and returned,
  // vm_id -> reason; the rest is applied.
  virtual absl::StatusOr<std::map<std::string, absl::Status>> Apply(
      const FirewallState& state) = 0;

  // Whether ApplyVm can take a change made on top of `state`'s globals
  // (state.vms is not read): false before the first Apply, after a failed
  // transaction, when a global setting changed or an entry was left out.
  // Callers then Apply the whole state.
  virtual bool AcceptsVmChanges(const FirewallState& state) const = 0;

  // Makes the rules of VM `vm_id` those of its entry in `state.vms` (no
  // entry: removes them) in one transaction, leaving every other VM's
  // rules alone. Only that entry is read. An entry that cannot be rendered
  // is reported as Apply does (its rules are removed). On error the rules
  // stay as they were and AcceptsVmChanges is false until the next Apply.
  // Requires AcceptsVmChanges(state).
  virtual absl::StatusOr<std::map<std::string, absl::Status>> ApplyVm(
      const FirewallState& state, const std::string& vm_id) = 0;

  // Deletes the tables of Apply(state with table = `table`); OK if absent.
  virtual absl::Status Remove(const std::string& table) = 0;

  // Runs RenderLearnedScript / RenderForgetScript, one transaction each
  // (they touch only the dynamic sets; AcceptsVmChanges is unaffected).
  virtual absl::Status AllowLearned(const std::string& table, uint32_t guest,
                                    const std::string& vm_id,
                                    const std::vector<LearnedAddress>& addresses) = 0;
  virtual absl::Status ForgetLearned(const std::string& table, uint32_t guest,
                                     const std::vector<uint32_t>& addresses) = 0;
};

}  // namespace smolvm::net
