// VmNetwork: addresses, TAP devices, the firewall (rendered whole from the
// store and swapped atomically at startup, then changed one VM at a time),
// port forwards, and re-addressing of clones through the guest agent.
#include "lib/core/vm_network.h"

#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/crash_point.h"
#include "lib/base/status_macros.h"
#include "lib/model/domain_rules.h"
#include "lib/model/validation.h"
#include "lib/net/port_probe.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {

VmNetwork::VmNetwork(NetworkOptions options, PortPolicy ports, EgressDenyPolicy egress_deny,
                     store::Store* store, std::unique_ptr<net::LinkBackend> links,
                     std::unique_ptr<net::Firewall> firewall,
                     std::unique_ptr<net::HostFirewall> host_firewall)
    : options_(std::move(options)),
      ports_(std::move(ports)),
      egress_deny_(std::move(egress_deny)),
      store_(store),
      links_(std::move(links)),
      firewall_(std::move(firewall)),
      host_firewall_(std::move(host_firewall)) {}

absl::StatusOr<std::unique_ptr<VmNetwork>> VmNetwork::Create(
    NetworkOptions options, PortPolicy ports, EgressDenyPolicy egress_deny,
    store::Store* store, std::unique_ptr<net::LinkBackend> links,
    std::unique_ptr<net::Firewall> firewall, std::unique_ptr<net::HostFirewall> host_firewall) {
  if (options.enabled && (!links || !firewall)) {
    return absl::InvalidArgumentError("networking needs a link backend and a firewall");
  }
  std::unique_ptr<VmNetwork> network(new VmNetwork(std::move(options), std::move(ports),
                                                   std::move(egress_deny), store,
                                                   std::move(links), std::move(firewall),
                                                   std::move(host_firewall)));
  SMOLVM_RETURN_IF_ERROR(network->Init());
  return network;
}

absl::Status VmNetwork::CheckForwardPolicy(const PortForward& f) const {
  const PortPolicy& policy = ports_;
  if (std::find(policy.host_ips.begin(), policy.host_ips.end(), f.host_ip) ==
      policy.host_ips.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "port forward host_ip ", f.host_ip, " is not allowed on this host (allowed: ",
        absl::StrJoin(policy.host_ips, ", "), "; [ports] host_ips in smolvmd.toml)"));
  }
  if (f.host_port < policy.min_port || f.host_port > policy.max_port) {
    return absl::PermissionDeniedError(absl::StrCat(
        "port forward host_port ", f.host_port, " is outside the allowed range ",
        policy.min_port, "-", policy.max_port, " ([ports] min/max in smolvmd.toml)"));
  }
  return net::CheckHostPortFree(f.host_ip, f.host_port, f.protocol);
}

absl::Status VmNetwork::Init() {
  if (!options_.enabled) return absl::OkStatus();
  SMOLVM_ASSIGN_OR_RETURN(net::Subnet subnet, net::Subnet::Parse(options_.subnet));
  subnet_ = subnet;
  SMOLVM_RETURN_IF_ERROR(links_->EnsureBridge(options_.bridge, subnet.gateway(),
                                              subnet.prefix));
  spdlog::info("network: bridge {} gateway {}/{}, NAT {}", options_.bridge,
               net::IpToString(subnet.gateway()), subnet.prefix,
               options_.uplink.empty() ? std::string("off (no uplink)")
                                               : "via " + options_.uplink);
  // The resolver of VMs with domain rules, on the gateway address.
  net::DnsProxy::Options dns;
  dns.listen_ip = subnet.gateway();
  if (auto upstream = net::ParseIpv4(options_.dns); upstream.ok()) dns.upstream_ip = *upstream;
  dns.firewall = firewall_.get();
  dns.table = options_.nft_table;
  auto proxy = net::DnsProxy::Start(dns, [this](uint32_t guest) { return DnsClient(guest); });
  if (proxy.ok()) {
    dns_proxy_ = *std::move(proxy);
    spdlog::info("network: resolver for domain rules on {}:{} (upstream {})",
                 net::IpToString(subnet.gateway()), dns_proxy_->port(),
                 options_.dns.empty() ? std::string("none: --dns") : options_.dns);
  } else {
    // Only VMs with domain rules need it; they are refused.
    spdlog::warn("network: no resolver for domain rules: {}",
                 std::string(proxy.status().message()));
  }
  return absl::OkStatus();
}

absl::Status VmNetwork::AssignAddressLocked(VmRecord& vm) {
  std::vector<std::string> pool;
  for (uint32_t ip : subnet_->HostAddresses()) pool.push_back(net::IpToString(ip));
  SMOLVM_ASSIGN_OR_RETURN(std::string ip, store_->AllocateAddress(vm.vm_id, pool));
  SMOLVM_ASSIGN_OR_RETURN(uint32_t addr, net::ParseIpv4(ip));
  NetworkConfig& n = vm.network;
  n.guest_ip = ip;
  n.gateway_ip = net::IpToString(subnet_->gateway());
  n.netmask = subnet_->netmask_string();
  n.tap_device = net::TapNameFor(addr);
  n.guest_mac = net::MacFor(addr);
  n.dns_server = options_.dns;
  n.egress = vm.config.egress;
  return absl::OkStatus();
}

absl::Status VmNetwork::Assign(VmRecord& vm, const std::vector<PortForward>& forwards) {
  if (!subnet_) {
    if (!forwards.empty()) {
      return absl::FailedPreconditionError(
          "networking is disabled on this daemon (--network=false)");
    }
    return absl::OkStatus();
  }
  absl::MutexLock lock(&mu_);
  SMOLVM_RETURN_IF_ERROR(CheckForwardsFreeLocked(vm.vm_id, vm.owner, forwards));
  SMOLVM_RETURN_IF_ERROR(AssignAddressLocked(vm));
  vm.network.port_forwards = forwards;
  return store_->UpdateVm(vm);
}

absl::Status VmNetwork::Reclaim(VmRecord& vm) {
  if (!subnet_) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (vm.network.guest_ip.empty()) {
    SMOLVM_RETURN_IF_ERROR(AssignAddressLocked(vm));
  } else {
    SMOLVM_ASSIGN_OR_RETURN(uint32_t addr, net::ParseIpv4(vm.network.guest_ip));
    if (!subnet_->Contains(addr)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "vm ", vm.vm_id, " had address ", vm.network.guest_ip,
          ", outside this daemon's subnet ", options_.subnet,
          "; restore it as a clone (with a new vm_id) instead"));
    }
    if (auto s = store_->ReserveAddress(vm.vm_id, vm.network.guest_ip); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "restore vm ", vm.vm_id, " into its own identity: ", s.message(),
          "; restore it as a clone (with a new vm_id) instead"));
    }
    // Identity is a function of the address, so it comes back unchanged.
    vm.network.tap_device = net::TapNameFor(addr);
    vm.network.guest_mac = net::MacFor(addr);
  }
  SMOLVM_RETURN_IF_ERROR(CheckForwardsFreeLocked(vm.vm_id, vm.owner, vm.network.port_forwards));
  return store_->UpdateVm(vm);
}

absl::Status VmNetwork::AddForward(VmRecord& vm, const PortForward& forward) {
  if (!subnet_) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  absl::MutexLock lock(&mu_);
  std::vector<PortForward> wanted = vm.network.port_forwards;
  wanted.push_back(forward);
  SMOLVM_RETURN_IF_ERROR(CheckForwardsFreeLocked(vm.vm_id, vm.owner, wanted));
  const std::vector<PortForward> before = vm.network.port_forwards;
  vm.network.port_forwards = std::move(wanted);
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  CrashPoint("expose.row_updated");
  if (auto s = ApplyFirewallLocked(vm.vm_id, /*vm_must_apply=*/true); !s.ok()) {
    vm.network.port_forwards = before;
    (void)store_->UpdateVm(vm);
    (void)ApplyFirewallLocked(vm.vm_id, /*vm_must_apply=*/false);
    return s;
  }
  return absl::OkStatus();
}

absl::Status VmNetwork::SetEgress(VmRecord& vm, const EgressPolicy& egress) {
  if (!subnet_) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  absl::MutexLock lock(&mu_);
  const EgressPolicy config_before = vm.config.egress;
  const EgressPolicy before = vm.network.egress;
  vm.config.egress = egress;
  vm.network.egress = egress;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  CrashPoint("egress.row_updated");
  if (auto s = ApplyFirewallLocked(vm.vm_id, /*vm_must_apply=*/true); !s.ok()) {
    vm.config.egress = config_before;
    vm.network.egress = before;
    (void)store_->UpdateVm(vm);
    (void)ApplyFirewallLocked(vm.vm_id, /*vm_must_apply=*/false);
    return s;
  }
  return absl::OkStatus();
}

absl::Status VmNetwork::RemoveForward(VmRecord& vm, const PortForward& forward) {
  absl::MutexLock lock(&mu_);
  auto& forwards = vm.network.port_forwards;
  auto it = std::find_if(forwards.begin(), forwards.end(), [&](const PortForward& f) {
    return f.host_ip == forward.host_ip && f.host_port == forward.host_port &&
           f.protocol == forward.protocol;
  });
  if (it == forwards.end()) {
    return absl::NotFoundError(absl::StrCat("vm ", vm.vm_id, " has no forward of ",
                                            forward.protocol, " ", forward.host_ip, ":",
                                            forward.host_port));
  }
  const PortForward removed = *it;
  forwards.erase(it);
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  if (auto s = ApplyFirewallLocked(vm.vm_id, /*vm_must_apply=*/false); !s.ok()) {
    // The rule may still be in place: keep the record saying so.
    forwards.push_back(removed);
    (void)store_->UpdateVm(vm);
    return s;
  }
  return absl::OkStatus();
}

absl::Status VmNetwork::Plug(const VmRecord& vm) {
  if (!subnet_ || vm.network.tap_device.empty()) return absl::OkStatus();
  SMOLVM_RETURN_IF_ERROR(links_->CreateTap(vm.network.tap_device, options_.bridge));
  // A foreign firewall's DROP (Docker, ufw) would cut the guest off however
  // our own rules read; checked at every plug since Docker may start later.
  absl::MutexLock lock(&mu_);
  if (host_firewall_) {
    auto done = host_firewall_->Ensure(options_.bridge);
    if (!done.ok()) {
      spdlog::warn("host firewall: {}", std::string(done.status().message()));
    } else if (absl::StrContains(*done, "added")) {
      spdlog::info("host firewall: {}", *done);
    }
  }
  // Rules go in before the guest can send a packet.
  return ApplyFirewallLocked(vm.vm_id, /*vm_must_apply=*/true);
}

void VmNetwork::Unplug(const VmRecord& vm) {
  if (!subnet_ || vm.network.tap_device.empty()) return;
  if (auto s = links_->DeleteLink(vm.network.tap_device); !s.ok()) {
    spdlog::warn("vm {}: {}", vm.vm_id, std::string(s.message()));
  }
  ReleaseHostFirewallIfIdle();
}

absl::StatusOr<net::LinkBackend::Counters> VmNetwork::TapCounters(const VmRecord& vm) {
  if (!subnet_ || vm.network.tap_device.empty()) {
    return absl::NotFoundError(absl::StrCat("vm ", vm.vm_id, " has no TAP"));
  }
  return links_->LinkCounters(vm.network.tap_device);
}

void VmNetwork::ReleaseHostFirewallIfIdle() {
  if (!host_firewall_) return;
  absl::MutexLock lock(&mu_);
  // TAPs exist exactly while VMs are plugged.
  auto taps = links_->ListLinks(net::kTapPrefix);
  if (!taps.ok() || !taps->empty()) return;
  if (auto s = host_firewall_->Remove(options_.bridge); !s.ok()) {
    spdlog::warn("host firewall: {}", std::string(s.message()));
  }
}

void VmNetwork::Release(const std::string& vm_id) {
  if (!subnet_) return;
  if (auto s = store_->ReleaseAddress(vm_id); !s.ok()) {
    spdlog::warn("vm {}: {}", vm_id, std::string(s.message()));
  }
  absl::MutexLock lock(&mu_);
  // Its rules go (it no longer holds an address).
  if (auto s = ApplyFirewallLocked(vm_id, /*vm_must_apply=*/false); !s.ok()) {
    spdlog::error("firewall: {}", std::string(s.message()));
  }
}

absl::Status VmNetwork::ApplyFirewall(const std::string& vm_id) {
  if (!subnet_) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  return ApplyFirewallLocked(vm_id, /*vm_must_apply=*/true);
}

absl::StatusOr<net::FirewallState> VmNetwork::FirewallGlobals() {
  net::FirewallState state;
  state.table = options_.nft_table;
  state.bridge = options_.bridge;
  state.subnet = *subnet_;
  state.uplink = options_.uplink;
  state.deny_cidrs = egress_deny_.deny_cidrs;
  if (!egress_deny_.allow_lan) {
    // Read each time: the host's LAN may change (DHCP, a new interface).
    SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> lan,
                            links_->ConnectedSubnets(options_.bridge));
    state.deny_cidrs.insert(state.deny_cidrs.end(), lan.begin(), lan.end());
  }
  for (const std::string& ip : ports_.host_ips) {
    if (auto addr = net::ParseIpv4(ip); addr.ok()) state.output_dnat_ips.push_back(*addr);
  }
  if (auto dns = net::ParseIpv4(options_.dns); dns.ok()) state.dns = *dns;
  if (dns_proxy_) {
    state.dns_proxy_ip = subnet_->gateway();
    state.dns_proxy_port = dns_proxy_->port();
  }
  return state;
}

absl::Status VmNetwork::AddFirewallEntry(const VmRecord& vm,
                                         const std::map<std::string, std::string>& allocations,
                                         net::FirewallState& state) {
  // Only VMs that hold their address: a stale config must not open a hole
  // for an address that now belongs to someone else.
  auto it = allocations.find(vm.network.guest_ip);
  if (vm.network.guest_ip.empty() || it == allocations.end() || it->second != vm.vm_id) {
    return absl::OkStatus();
  }
  auto ip = net::ParseIpv4(vm.network.guest_ip);
  if (!ip.ok()) {
    spdlog::error("firewall: vm {} left out: {}", vm.vm_id, std::string(ip.status().message()));
    return ip.status();
  }
  net::VmFirewallEntry entry;
  entry.vm_id = vm.vm_id;
  entry.tap = vm.network.tap_device;
  entry.ip = *ip;
  entry.mac = vm.network.guest_mac;
  entry.egress = vm.network.egress;
  entry.forwards = vm.network.port_forwards;
  state.vms.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status VmNetwork::ApplyFirewallLocked(const std::string& vm_id, bool vm_must_apply) {
  SMOLVM_ASSIGN_OR_RETURN(net::FirewallState state, FirewallGlobals());
  SMOLVM_ASSIGN_OR_RETURN(auto allocations, store_->AddressAllocations());
  absl::StatusOr<std::map<std::string, absl::Status>> rejected;
  bool applied = false;
  // One VM changed and the installed rules fit: change that VM's rules
  // alone (one small transaction, whatever the number of VMs). A VM gone
  // or without its address has no entry: its rules go.
  if (!vm_id.empty() && firewall_->AcceptsVmChanges(state)) {
    absl::StatusOr<VmRecord> vm = store_->GetVm(vm_id);
    if (!vm.ok() && !absl::IsNotFound(vm.status())) return vm.status();
    if (vm.ok()) {
      absl::Status s = AddFirewallEntry(*vm, allocations, state);
      if (!s.ok() && vm_must_apply) return s;
    }
    const absl::Time t0 = absl::Now();
    rejected = firewall_->ApplyVm(state, vm_id);
    applied = rejected.ok();
    if (applied && events_) events_(CoreEvent::kFirewallVmUpdate, absl::Now() - t0);
    if (!applied) {
      // The rules are unknown now: the whole state below puts them right.
      spdlog::warn("firewall: {}; applying the whole ruleset",
                   std::string(rejected.status().message()));
      state.vms.clear();
    }
  }
  if (!applied) {
    SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, store_->AllVms());
    for (const auto& vm : vms) {
      absl::Status s = AddFirewallEntry(vm, allocations, state);
      if (!s.ok() && vm.vm_id == vm_id && vm_must_apply) return s;
    }
    // A VM whose rules cannot be rendered is left out (its TAP sends
    // nothing) and fails alone; every other VM's rules still apply.
    const absl::Time t0 = absl::Now();
    rejected = firewall_->Apply(state);
    if (rejected.ok() && events_) events_(CoreEvent::kFirewallFullUpdate, absl::Now() - t0);
  }
  if (!rejected.ok()) return rejected.status();
  UpdateDnsClientsLocked(state, *rejected, applied ? vm_id : "");
  absl::Status mine = absl::OkStatus();
  for (const auto& [id, why] : *rejected) {
    if (id == vm_id && vm_must_apply) {
      mine = absl::FailedPreconditionError(absl::StrCat(
          "the firewall rules of vm ", id, " cannot be installed: ", why.message()));
    } else {
      spdlog::error("firewall: vm {} left out: {}", id, std::string(why.message()));
    }
  }
  return mine;
}

void VmNetwork::UpdateDnsClientsLocked(const net::FirewallState& state,
                                       const std::map<std::string, absl::Status>& rejected,
                                       const std::string& vm_id) {
  if (!dns_proxy_) return;
  // The VMs' entries now (for vm_id alone, or all), and which of them have
  // domain rules.
  std::map<uint32_t, net::DnsProxy::Client> now;
  std::map<uint32_t, std::string> holders;  // Address -> its VM, rules or not.
  for (const net::VmFirewallEntry& e : state.vms) {
    if (!vm_id.empty() && e.vm_id != vm_id) continue;
    holders[e.ip] = e.vm_id;
    if (rejected.count(e.vm_id) == 0 && HasDomainRules(e.egress)) {
      now[e.ip] = net::DnsProxy::Client{e.vm_id, e.egress};
    }
  }
  // Guests whose learned addresses must go: their policy changed, their VM
  // lost its rules or its address, or the address went to another VM.
  std::vector<uint32_t> changed;
  std::set<uint32_t> unchanged;  // Same VM, same policy, before and now.
  {
    absl::MutexLock lock(&dns_mu_);
    for (auto it = dns_clients_.begin(); it != dns_clients_.end();) {
      const bool in_scope = vm_id.empty() || it->second.vm_id == vm_id ||
                            holders.count(it->first) != 0;
      if (!in_scope) {
        ++it;
        continue;
      }
      auto next = now.find(it->first);
      if (next == now.end() || next->second.vm_id != it->second.vm_id ||
          !(next->second.egress == it->second.egress)) {
        changed.push_back(it->first);
      } else {
        unchanged.insert(it->first);
      }
      it = dns_clients_.erase(it);
    }
    for (auto& [ip, client] : now) dns_clients_[ip] = std::move(client);
  }
  if (vm_id.empty()) {
    // A whole apply replaced the tables (and emptied the learned sets):
    // what the unchanged guests learned goes back; every other record goes.
    dns_proxy_->Reinstall(unchanged);
    return;
  }
  for (uint32_t ip : changed) {
    if (auto s = dns_proxy_->Forget(ip); !s.ok()) {
      spdlog::error("firewall: {}", std::string(s.message()));
    }
  }
}

std::optional<net::DnsProxy::Client> VmNetwork::DnsClient(uint32_t guest) {
  absl::MutexLock lock(&dns_mu_);
  auto it = dns_clients_.find(guest);
  if (it == dns_clients_.end()) return std::nullopt;
  return it->second;
}

void VmNetwork::Reconcile(const std::vector<VmRecord>& vms) {
  if (!subnet_) return;
  auto release_host_firewall = absl::MakeCleanup([this] { ReleaseHostFirewallIfIdle(); });
  std::set<std::string> wanted_taps, known;
  for (const auto& vm : vms) {
    known.insert(vm.vm_id);
    if (vm.state == VmState::kRunning || vm.state == VmState::kPaused) {
      wanted_taps.insert(vm.network.tap_device);
    }
  }
  if (auto taps = links_->ListLinks(net::kTapPrefix); taps.ok()) {
    for (const auto& tap : *taps) {
      if (wanted_taps.count(tap)) continue;
      // Only ours: a TAP for an address outside our subnet belongs to
      // another smolvmd on this host (another instance, another subnet).
      auto ip = net::AddressOfTap(tap);
      if (!ip || !subnet_->Contains(*ip)) continue;
      spdlog::warn("network: removing stale tap {}", tap);
      (void)links_->DeleteLink(tap);
    }
  }
  if (auto allocations = store_->AddressAllocations(); allocations.ok()) {
    for (const auto& [ip, vm_id] : *allocations) {
      if (known.count(vm_id)) continue;
      spdlog::warn("network: releasing {} of vanished vm {}", ip, vm_id);
      (void)store_->ReleaseAddress(vm_id);
    }
  }
  if (auto s = ApplyFirewall(); !s.ok()) {
    spdlog::error("firewall: {}", std::string(s.message()));
  }
}

std::string VmNetwork::Cmdline(const NetworkConfig& n) const {
  if (!subnet_ || n.guest_ip.empty()) return "";
  // Read by the guest's init (guest/rootfs-init.sh) to configure eth0.
  return absl::StrCat(" smolvm.net=", n.guest_ip, "/", subnet_->prefix, ",", n.gateway_ip,
                      ",", n.dns_server.empty() ? "-" : n.dns_server);
}

void VmNetwork::FillLaunch(const VmRecord& vm, vmm::LaunchSpec& spec) const {
  if (!subnet_ || vm.network.tap_device.empty()) return;
  spec.tap_device = vm.network.tap_device;
  spec.guest_mac = vm.network.guest_mac;
}

std::optional<agent::GuestNetworkIdentity> VmNetwork::GuestIdentity(const VmRecord& vm) const {
  if (!subnet_ || vm.network.guest_ip.empty()) return std::nullopt;
  const NetworkConfig& n = vm.network;
  agent::GuestNetworkIdentity id;
  id.interface = "eth0";
  id.mac = n.guest_mac;
  id.ipv4_address = n.guest_ip;
  id.prefix_length = static_cast<uint32_t>(subnet_->prefix);
  id.gateway = n.gateway_ip;
  id.dns_server = n.dns_server;
  return id;
}

namespace {

// The re-addressing of agents before protocol 2, as one script so the
// guest is never left half re-addressed by a lost call. The gratuitous ARP
// is sent in the background: arping waits for replies that never come and
// would add most of a second to every clone.
std::string ReaddressScript(const agent::GuestNetworkIdentity& id) {
  const std::string& dev = id.interface;
  return absl::StrCat(
      "set -e; ip link set ", dev, " down; ip link set ", dev, " address ", id.mac,
      "; ip addr flush dev ", dev, "; ip addr add ", id.ipv4_address, "/", id.prefix_length,
      " dev ", dev, "; ip link set ", dev, " up; ",
      id.gateway.empty() ? std::string()
                         : absl::StrCat("ip route replace default via ", id.gateway, "; "),
      id.dns_server.empty()
          ? std::string(": > /etc/resolv.conf")
          : absl::StrCat("echo nameserver ", id.dns_server, " > /etc/resolv.conf"),
      "; (arping -U -c 1 -I ", dev, " ", id.ipv4_address, " >/dev/null 2>&1 &)");
}

}  // namespace

absl::Status VmNetwork::Readdress(agent::GuestAgent& guest, const VmRecord& vm) {
  std::optional<agent::GuestNetworkIdentity> id = GuestIdentity(vm);
  if (!id) return absl::OkStatus();
  auto failed = [&](absl::string_view why) {
    return absl::InternalError(absl::StrCat("re-address clone ", vm.vm_id, " to ",
                                            id->ipv4_address, " failed: ", why));
  };
  if (guest.protocol_version() >= agent::kReidentifyProtocolVersion) {
    agent::Reidentity r;
    r.network = *id;
    auto done = guest.Reidentify(r, absl::Seconds(10));
    if (done.ok()) return absl::OkStatus();
    // What the agent reported is a failure of the guest; a broken
    // connection keeps its code.
    if (absl::IsFailedPrecondition(done.status())) return failed(done.status().message());
    return done.status();
  }
  SMOLVM_RETURN_IF_ERROR(agent::ValidateNetworkIdentity(*id));
  agent::ExecSpec spec;
  spec.argv = {"/bin/sh", "-c", ReaddressScript(*id)};
  spec.timeout = absl::Seconds(10);
  SMOLVM_ASSIGN_OR_RETURN(auto exec, guest.StartExec(spec));
  std::string output;
  while (true) {
    SMOLVM_ASSIGN_OR_RETURN(agent::ExecEvent ev, exec->Next(absl::Now() + absl::Seconds(15)));
    if (ev.kind != agent::ExecEvent::Kind::kExit) {
      if (output.size() < 4096) output += ev.data;
      continue;
    }
    if (ev.exit_code != 0 || ev.signal != 0 || ev.timed_out) return failed(output);
    return absl::OkStatus();
  }
}

absl::Status VmNetwork::CheckForwardsFreeLocked(const std::string& vm_id,
                                                const std::string& owner,
                                                const std::vector<PortForward>& wanted) {
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> all, store_->AllVms());
  for (size_t i = 0; i < wanted.size(); ++i) {
    const PortForward& forward = wanted[i];
    auto clash = [&](const PortForward& f) {
      bool same_ip = f.host_ip == forward.host_ip || f.host_ip == "0.0.0.0" ||
                     forward.host_ip == "0.0.0.0";
      return same_ip && f.host_port == forward.host_port && f.protocol == forward.protocol;
    };
    for (size_t j = 0; j < i; ++j) {
      if (clash(wanted[j])) {
        return absl::AlreadyExistsError(absl::StrCat(
            "host port ", forward.protocol, " ", forward.host_ip, ":", forward.host_port,
            " is already forwarded to vm ", vm_id, "; pick another host port"));
      }
    }
    for (const auto& other : all) {
      if (other.vm_id == vm_id) continue;
      for (const auto& f : other.network.port_forwards) {
        if (clash(f)) {
          // Host ports are shared by all tenants; another tenant's VM is
          // not named.
          return absl::AlreadyExistsError(absl::StrCat(
              "host port ", forward.protocol, " ", forward.host_ip, ":", forward.host_port,
              " is already forwarded to ",
              other.owner == owner ? "vm " + other.vm_id : std::string("another vm"),
              "; pick another host port"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace smolvm::core
