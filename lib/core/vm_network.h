// File: vm_network.h
//
// VmNetwork is the host networking of VMs, one collaborator of VmManager:
// addresses (allocated in the store), TAP devices on the bridge
// (LinkBackend), the nftables ruleset (Firewall: rendered whole from the
// store and swapped atomically at startup and reconciliation; after that a
// VM's change touches that VM's rules only), port forwards under the operator's
// policy, and the re-addressing of clones through their guest agent.
// Every method is a no-op (or a clear error, for port forwards) when
// networking is disabled.
//
// Thread-safety: all methods are thread-safe; address and port-forward
// decisions and firewall rebuilds are serialized by one mutex.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/agent/guest_agent.h"
#include "lib/core/events.h"
#include "lib/model/policy.h"
#include "lib/model/vm.h"
#include "lib/net/dns_proxy.h"
#include "lib/net/firewall.h"
#include "lib/net/host_firewall.h"
#include "lib/net/ip_pool.h"
#include "lib/net/link_backend.h"
#include "lib/store/store.h"
#include "lib/vmm/hypervisor.h"

namespace smolvm::core {

// Host networking of VMs: a bridge with the gateway address, a TAP per VM
// enslaved to it, addresses from `subnet`, NAT out of `uplink`.
struct NetworkOptions {
  bool enabled = false;
  std::string bridge = "smolvm0";
  std::string subnet = "10.200.0.0/24";
  std::string uplink;  // Resolved interface; "" = no NAT (VMs reach nothing beyond the host).
  std::string dns;     // Resolver written into guests; "" = none.
  std::string nft_table = "smolvmd";
};

class VmNetwork {
 public:
  // Sets up the bridge when enabled. `links` and `firewall` are required
  // when enabled; `host_firewall` may be null.
  static absl::StatusOr<std::unique_ptr<VmNetwork>> Create(
      NetworkOptions options, PortPolicy ports, EgressDenyPolicy egress_deny,
      store::Store* store, std::unique_ptr<net::LinkBackend> links,
      std::unique_ptr<net::Firewall> firewall,
      std::unique_ptr<net::HostFirewall> host_firewall);
  VmNetwork(const VmNetwork&) = delete;
  VmNetwork& operator=(const VmNetwork&) = delete;

  bool enabled() const { return subnet_.has_value(); }
  // Where firewall updates are reported (CoreEvent::kFirewall*); set once,
  // before the network is used.
  void set_events(EventSink events) { events_ = std::move(events); }

  // The operator's port policy for a forward a caller asks for: address and
  // range allowed, and no host process holding the port.
  absl::Status CheckForwardPolicy(const PortForward& forward) const;
  // A new VM (or clone): a fresh address and its derived identity, the
  // port forwards (ALREADY_EXISTS if another VM has one of their host
  // ports), recorded in the store.
  absl::Status Assign(VmRecord& vm, const std::vector<PortForward>& forwards);
  // A restore into the snapshot's own identity: takes back its address
  // (FAILED_PRECONDITION if another VM holds it) and its forwards,
  // recorded in the store.
  absl::Status Reclaim(VmRecord& vm);
  // Adds / removes a forward of `vm` (store and firewall). On failure
  // nothing changed.
  absl::Status AddForward(VmRecord& vm, const PortForward& forward);
  absl::Status RemoveForward(VmRecord& vm, const PortForward& forward);
  // Replaces `vm`'s egress policy (VmConfig's, so snapshots and forks carry
  // it, and NetworkConfig's, the one in force) in the store and the
  // firewall, as one change of its set elements (atomic: a packet sees the
  // old policy or the new one). On failure nothing changed.
  absl::Status SetEgress(VmRecord& vm, const EgressPolicy& egress);
  // TAP up and rules installed: before the VMM starts.
  absl::Status Plug(const VmRecord& vm);
  // TAP removed (the VM stopped); its rules stay while it exists.
  void Unplug(const VmRecord& vm);
  // The counters of `vm`'s TAP; NOT_FOUND without networking or a TAP.
  absl::StatusOr<net::LinkBackend::Counters> TapCounters(const VmRecord& vm);
  // Address released and rules removed: the VM is gone.
  void Release(const std::string& vm_id);
  // Brings the rules of `vm_id` in line with the store, alone when the
  // firewall takes per-VM changes (else, and for an empty `vm_id`, the
  // whole ruleset is re-rendered from the store and swapped in
  // atomically). VMs whose rules cannot be rendered are left out and
  // logged; the result is an error only if `vm_id` is one of them.
  absl::Status ApplyFirewall(const std::string& vm_id = "");
  // At startup: removes TAPs and allocations of VMs that no longer exist
  // or do not run (`vms` is what the store holds), rebuilds the firewall.
  void Reconcile(const std::vector<VmRecord>& vms);
  // The kernel argument a cold-booted guest's init configures eth0 from.
  std::string Cmdline(const NetworkConfig& network) const;
  void FillLaunch(const VmRecord& vm, vmm::LaunchSpec& spec) const;
  // The identity the guest's eth0 must have (MAC, address/prefix, gateway,
  // DNS): the one source for the cold boot's and the clone's. nullopt when
  // networking is disabled or `vm` has no address.
  std::optional<agent::GuestNetworkIdentity> GuestIdentity(const VmRecord& vm) const;
  // A clone runs with its snapshot's address until its agent moves it:
  // with Reidentify (network only) when the agent has it, else with a
  // shell script of `ip` commands (agents before protocol 2). A restore
  // normally moves it in its one Reidentify (VmManager::FixUpRestoredLocked)
  // and never gets here.
  absl::Status Readdress(agent::GuestAgent& guest, const VmRecord& vm);

 private:
  VmNetwork(NetworkOptions options, PortPolicy ports, EgressDenyPolicy egress_deny,
            store::Store* store, std::unique_ptr<net::LinkBackend> links,
            std::unique_ptr<net::Firewall> firewall,
            std::unique_ptr<net::HostFirewall> host_firewall);
  absl::Status Init();
  absl::Status AssignAddressLocked(VmRecord& vm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ALREADY_EXISTS if another VM forwards one of `wanted`'s host ports.
  // Another tenant's VM is not named in the message.
  absl::Status CheckForwardsFreeLocked(const std::string& vm_id, const std::string& owner,
                                       const std::vector<PortForward>& wanted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ApplyFirewall; when !vm_must_apply, `vm_id`'s own rejection is only
  // logged (its rules are being removed or rolled back).
  absl::Status ApplyFirewallLocked(const std::string& vm_id, bool vm_must_apply)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The firewall state without VMs: this daemon's settings and the LANs.
  absl::StatusOr<net::FirewallState> FirewallGlobals() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends `vm`'s entry to `state` if it holds its address (else nothing);
  // an unparsable address is logged and returned.
  static absl::Status AddFirewallEntry(const VmRecord& vm,
                                       const std::map<std::string, std::string>& allocations,
                                       net::FirewallState& state);
  // Removes the host-firewall accepts (HostFirewall) once no TAP is left.
  void ReleaseHostFirewallIfIdle();
  // After a firewall change: what the resolver knows of the VMs with domain
  // rules (`state`'s entries, but the rejected ones), for `vm_id` alone or
  // (empty) all; what a guest learned under a policy that changed is
  // forgotten.
  void UpdateDnsClientsLocked(const net::FirewallState& state,
                              const std::map<std::string, absl::Status>& rejected,
                              const std::string& vm_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<net::DnsProxy::Client> DnsClient(uint32_t guest);

  const NetworkOptions options_;
  const PortPolicy ports_;
  const EgressDenyPolicy egress_deny_;
  store::Store* const store_;
  const std::unique_ptr<net::LinkBackend> links_;
  const std::unique_ptr<net::Firewall> firewall_;
  const std::unique_ptr<net::HostFirewall> host_firewall_;
  std::optional<net::Subnet> subnet_;  // Set by Init when enabled.
  absl::Mutex mu_;
  EventSink events_;
  // Guest address -> its VM, for the VMs with domain rules (read by the
  // resolver's thread).
  absl::Mutex dns_mu_;
  std::map<uint32_t, net::DnsProxy::Client> dns_clients_ ABSL_GUARDED_BY(dns_mu_);
  // Declared last: stopped before what its thread uses goes.
  std::unique_ptr<net::DnsProxy> dns_proxy_;
};

}  // namespace smolvm::core
