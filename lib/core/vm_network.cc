// VmManager's networking: address allocation, TAP devices, the firewall
// (rendered whole from the store and swapped atomically), port forwards,
// and re-addressing of clones through the guest agent.
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/model/validation.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {

absl::Status VmManager::InitNetwork() {
  if (!options_.network.enabled) return absl::OkStatus();
  SMOLVM_ASSIGN_OR_RETURN(net::Subnet subnet, net::Subnet::Parse(options_.network.subnet));
  subnet_ = subnet;
  SMOLVM_RETURN_IF_ERROR(links_->EnsureBridge(options_.network.bridge, subnet.gateway(),
                                              subnet.prefix));
  spdlog::info("network: bridge {} gateway {}/{}, NAT {}", options_.network.bridge,
               net::IpToString(subnet.gateway()), subnet.prefix,
               options_.network.uplink.empty() ? std::string("off (no uplink)")
                                               : "via " + options_.network.uplink);
  return absl::OkStatus();
}

absl::Status VmManager::AssignNetwork(VmRecord& vm) {
  if (!subnet_) return absl::OkStatus();
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
  n.dns_server = options_.network.dns;
  n.egress = vm.config.egress;
  return absl::OkStatus();
}

absl::Status VmManager::ReclaimNetwork(VmRecord& vm) {
  if (!subnet_ || vm.network.guest_ip.empty()) return AssignNetwork(vm);
  SMOLVM_ASSIGN_OR_RETURN(uint32_t addr, net::ParseIpv4(vm.network.guest_ip));
  if (!subnet_->Contains(addr)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vm ", vm.vm_id, " had address ", vm.network.guest_ip, ", outside this daemon's subnet ",
        options_.network.subnet, "; restore it as a clone (with a new vm_id) instead"));
  }
  if (auto s = store_->ReserveAddress(vm.vm_id, vm.network.guest_ip); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "restore vm ", vm.vm_id, " into its own identity: ", s.message(),
        "; restore it as a clone (with a new vm_id) instead"));
  }
  // Identity is a function of the address, so it comes back unchanged.
  vm.network.tap_device = net::TapNameFor(addr);
  vm.network.guest_mac = net::MacFor(addr);
  return absl::OkStatus();
}

absl::Status VmManager::PlugNetwork(const VmRecord& vm) {
  if (!subnet_ || vm.network.tap_device.empty()) return absl::OkStatus();
  SMOLVM_RETURN_IF_ERROR(links_->CreateTap(vm.network.tap_device, options_.network.bridge));
  // A foreign firewall's DROP (Docker, ufw) would cut the guest off however
  // our own rules read; checked at every plug since Docker may start later.
  if (host_firewall_) {
    absl::MutexLock lock(&net_mu_);
    auto done = host_firewall_->Ensure(options_.network.bridge);
    if (!done.ok()) {
      spdlog::warn("host firewall: {}", std::string(done.status().message()));
    } else if (absl::StrContains(*done, "added")) {
      spdlog::info("host firewall: {}", *done);
    }
  }
  // Rules go in before the guest can send a packet.
  return ApplyFirewall(vm.vm_id);
}

void VmManager::UnplugNetwork(const VmRecord& vm) {
  if (!subnet_ || vm.network.tap_device.empty()) return;
  if (auto s = links_->DeleteLink(vm.network.tap_device); !s.ok()) {
    spdlog::warn("vm {}: {}", vm.vm_id, std::string(s.message()));
  }
  ReleaseHostFirewallIfIdle();
}

void VmManager::ReleaseHostFirewallIfIdle() {
  if (!host_firewall_) return;
  absl::MutexLock lock(&net_mu_);
  // TAPs exist exactly while VMs are plugged.
  auto taps = links_->ListLinks(net::kTapPrefix);
  if (!taps.ok() || !taps->empty()) return;
  if (auto s = host_firewall_->Remove(options_.network.bridge); !s.ok()) {
    spdlog::warn("host firewall: {}", std::string(s.message()));
  }
}

void VmManager::ReleaseNetwork(const std::string& vm_id) {
  if (!subnet_) return;
  if (auto s = store_->ReleaseAddress(vm_id); !s.ok()) {
    spdlog::warn("vm {}: {}", vm_id, std::string(s.message()));
  }
  if (auto s = ApplyFirewall(); !s.ok()) {
    spdlog::error("firewall: {}", std::string(s.message()));
  }
}

absl::Status VmManager::ApplyFirewall(const std::string& vm_id) {
  if (!subnet_) return absl::OkStatus();
  absl::MutexLock lock(&net_mu_);
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, store_->AllVms());
  SMOLVM_ASSIGN_OR_RETURN(auto allocations, store_->AddressAllocations());
  net::FirewallState state;
  state.table = options_.network.nft_table;
  state.bridge = options_.network.bridge;
  state.subnet = *subnet_;
  state.uplink = options_.network.uplink;
  state.deny_cidrs = options_.egress_deny.deny_cidrs;
  if (!options_.egress_deny.allow_lan) {
    // Read each time: the host's LAN may change (DHCP, a new interface).
    SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> lan,
                            links_->ConnectedSubnets(options_.network.bridge));
    state.deny_cidrs.insert(state.deny_cidrs.end(), lan.begin(), lan.end());
  }
  for (const std::string& ip : options_.ports.host_ips) {
    if (auto addr = net::ParseIpv4(ip); addr.ok()) state.output_dnat_ips.push_back(*addr);
  }
  if (auto dns = net::ParseIpv4(options_.network.dns); dns.ok()) state.dns = *dns;
  for (const auto& vm : vms) {
    // Only VMs that hold their address: a stale config must not open a hole
    // for an address that now belongs to someone else.
    auto it = allocations.find(vm.network.guest_ip);
    if (vm.network.guest_ip.empty() || it == allocations.end() || it->second != vm.vm_id) {
      continue;
    }
    auto ip = net::ParseIpv4(vm.network.guest_ip);
    if (!ip.ok()) {
      spdlog::error("firewall: vm {} left out: {}", vm.vm_id, std::string(ip.status().message()));
      if (vm.vm_id == vm_id) return ip.status();
      continue;
    }
    net::VmFirewallEntry entry;
    entry.vm_id = vm.vm_id;
    entry.tap = vm.network.tap_device;
    entry.ip = *ip;
    entry.mac = vm.network.guest_mac;
    entry.egress = vm.network.egress;
    entry.forwards = vm.network.port_forwards;
    state.vms.push_back(std::move(entry));
  }
  // A VM whose rules cannot be rendered is left out (its TAP sends
  // nothing) and fails alone; every other VM's rules still apply.
  SMOLVM_ASSIGN_OR_RETURN(auto rejected, firewall_->Apply(state));
  absl::Status mine = absl::OkStatus();
  for (const auto& [id, why] : rejected) {
    if (id == vm_id) {
      mine = absl::FailedPreconditionError(absl::StrCat(
          "the firewall rules of vm ", id, " cannot be installed: ", why.message()));
    } else {
      spdlog::error("firewall: vm {} left out: {}", id, std::string(why.message()));
    }
  }
  return mine;
}

void VmManager::ReconcileNetwork(const std::vector<VmRecord>& vms) {
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

std::string VmManager::NetworkCmdline(const NetworkConfig& n) const {
  if (!subnet_ || n.guest_ip.empty()) return "";
  // Read by the guest's init (guest/rootfs-init.sh) to configure eth0.
  return absl::StrCat(" smolvm.net=", n.guest_ip, "/", subnet_->prefix, ",", n.gateway_ip,
                      ",", n.dns_server.empty() ? "-" : n.dns_server);
}

void VmManager::FillLaunchNetwork(const VmRecord& vm, vmm::LaunchSpec& spec) const {
  if (!subnet_ || vm.network.tap_device.empty()) return;
  spec.tap_device = vm.network.tap_device;
  spec.guest_mac = vm.network.guest_mac;
}

absl::Status VmManager::ReaddressGuestLocked(VmSlot& slot, const VmRecord& vm) {
  if (!subnet_ || vm.network.guest_ip.empty()) return absl::OkStatus();
  const NetworkConfig& n = vm.network;
  agent::ExecSpec spec;
  // One script, so the guest is never left half re-addressed by a lost call.
  // The gratuitous ARP is sent in the background: arping waits for replies
  // that never come and would add most of a second to every clone.
  spec.argv = {"/bin/sh", "-c",
               absl::StrCat("set -e; ip link set eth0 down; ip link set eth0 address ",
                            n.guest_mac, "; ip addr flush dev eth0; ip addr add ", n.guest_ip,
                            "/", subnet_->prefix, " dev eth0; ip link set eth0 up; "
                            "ip route replace default via ", n.gateway_ip, "; ",
                            n.dns_server.empty()
                                ? std::string(": > /etc/resolv.conf")
                                : absl::StrCat("echo nameserver ", n.dns_server,
                                               " > /etc/resolv.conf"),
                            "; (arping -U -c 1 -I eth0 ", n.guest_ip, " >/dev/null 2>&1 &)")};
  spec.timeout = absl::Seconds(10);
  SMOLVM_ASSIGN_OR_RETURN(auto exec, slot.agent->StartExec(spec));
  std::string output;
  while (true) {
    SMOLVM_ASSIGN_OR_RETURN(agent::ExecEvent ev, exec->Next(absl::Now() + absl::Seconds(15)));
    if (ev.kind != agent::ExecEvent::Kind::kExit) {
      if (output.size() < 4096) output += ev.data;
      continue;
    }
    if (ev.exit_code != 0 || ev.signal != 0 || ev.timed_out) {
      return absl::InternalError(absl::StrCat("re-address clone ", vm.vm_id, " to ",
                                              n.guest_ip, " failed: ", output));
    }
    slot.needs_readdress = false;
    return absl::OkStatus();
  }
}

absl::Status VmManager::CheckForwardsFree(const std::string& vm_id, const std::string& owner,
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

absl::StatusOr<VmRecord> VmManager::ExposePort(const Caller& caller, const std::string& vm_id,
                                               PortForward forward) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(NormalizePortForward(forward));
  if (!subnet_) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  SMOLVM_RETURN_IF_ERROR(CheckForwardPolicy(forward));
  VmRecord counted = vm;
  counted.network.port_forwards.push_back(forward);
  const bool live = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, vm.owner, VmQuotaKey(vm_id), VmUsage(counted, live)));
  {
    absl::MutexLock net_lock(&net_mu_);
    std::vector<PortForward> wanted = vm.network.port_forwards;
    wanted.push_back(forward);
    SMOLVM_RETURN_IF_ERROR(CheckForwardsFree(vm_id, vm.owner, wanted));
    vm.network.port_forwards = std::move(wanted);
    SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  }
  if (auto s = ApplyFirewall(vm_id); !s.ok()) {
    vm.network.port_forwards.pop_back();
    (void)store_->UpdateVm(vm);
    return s;
  }
  spdlog::info("vm {}: exposed guest port {} on {}:{}/{}", vm_id, forward.guest_port,
               forward.host_ip, forward.host_port, forward.protocol);
  return store_->GetVm(vm_id);
}

absl::StatusOr<VmRecord> VmManager::UnexposePort(const Caller& caller, const std::string& vm_id,
                                                 PortForward forward) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  if (forward.guest_port == 0) forward.guest_port = 1;  // Not part of the key.
  SMOLVM_RETURN_IF_ERROR(NormalizePortForward(forward));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  auto& forwards = vm.network.port_forwards;
  auto it = std::find_if(forwards.begin(), forwards.end(), [&](const PortForward& f) {
    return f.host_ip == forward.host_ip && f.host_port == forward.host_port &&
           f.protocol == forward.protocol;
  });
  if (it == forwards.end()) {
    return absl::NotFoundError(absl::StrCat("vm ", vm_id, " has no forward of ",
                                            forward.protocol, " ", forward.host_ip, ":",
                                            forward.host_port));
  }
  forwards.erase(it);
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  SMOLVM_RETURN_IF_ERROR(ApplyFirewall());
  return store_->GetVm(vm_id);
}

absl::StatusOr<std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>>
VmManager::ForkSnapshot(const Caller& caller, const std::string& snapshot_id, uint32_t count,
                        bool resume_vm, const std::string& vm_id_prefix) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  if (count < 1 || count > 64) {
    return absl::InvalidArgumentError(absl::StrCat("fork count ", count, " must be 1-64"));
  }
  const std::string prefix = vm_id_prefix.empty() ? snapshot_id + "-fork" : vm_id_prefix;
  SMOLVM_RETURN_IF_ERROR(ValidateId(absl::StrCat(prefix, "-", count), "vm_id_prefix + \"-N\""));
  SMOLVM_RETURN_IF_ERROR(GetSnapshot(caller, snapshot_id).status());
  std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>> results;
  for (uint32_t i = 1; i <= count; ++i) {
    std::string id = absl::StrCat(prefix, "-", i);
    results.emplace_back(id, RestoreSnapshot(caller, snapshot_id, resume_vm, id));
  }
  return results;
}

}  // namespace smolvm::core
